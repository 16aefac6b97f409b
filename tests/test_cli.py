import os
import subprocess
import sys


def run_cli(tmp_path, params: str, *args):
    (tmp_path / "params.yaml").write_text(params)
    env = {**os.environ, "STM_ROOT": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "stm", *args], capture_output=True, text=True, env=env, timeout=300)


def test_bad_params_give_a_named_error_without_traceback(tmp_path):
    proc = run_cli(tmp_path, "profile: smoke\ndata:\n  miner: splade\n", "data")
    assert proc.returncode == 2
    assert "data.miner" in proc.stderr and "params.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_training_data_names_the_file(tmp_path):
    proc = run_cli(tmp_path, "profile: smoke\n", "train", "--expert", "nlu", "--no-eval")
    assert proc.returncode == 2
    assert "splits/nlu.jsonl" in proc.stderr and "run the data stage" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_expert_is_refused(tmp_path):
    proc = run_cli(tmp_path, "profile: smoke\n", "ablate", "size", "7")
    assert proc.returncode == 2 and "out of range" in proc.stderr
