import os
import pytest
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


BAD_INPUTS = [  # (params.yaml, files to write, command, what the message must name)
    ("profile: huge\n", {}, ["data"], "profile"),
    ("profile: smoke\nbackbone: /abs/model\n", {}, ["train", "--expert", "nlu"], "backbone: '/abs/model' names the output folders"),
    ("profile: smoke\nsynthesis:\n  rows_per_split: many\n", {}, ["synthesize"], "synthesis.rows_per_split"),
    ("profile: smoke\ntraining:\n  batch_size: 1\n", {}, ["train", "--expert", "nlu"], "training.batch_size"),
    ("profile: smoke\nmerging:\n  methods: [soup]\n", {}, ["merge"], "merging.methods"),
    ("profile: smoke\nprompts:\n  optimizer: magic\n", {}, ["prompts"], "prompts.optimizer"),
    ("profile: smoke\nevaluation:\n  tasks: [NotATask]\n", {}, ["baselines"], "unknown task 'NotATask'"),
    ("profile: smoke\n", {}, ["synthesize"], "splits/search.jsonl: file not found"),
    ("profile: smoke\n", {}, ["merge"], "expert adapters missing"),
    ("profile: smoke\n", {"data/processed/smoke/splits/nlu.jsonl": ""}, ["train", "--expert", "nlu"], "nlu.jsonl: no triples"),
    ("profile: smoke\n", {"data/processed/smoke/splits/nlu.jsonl": '{"id": "a", "split": "nlu"}\n{oops\n'},
     ["train", "--expert", "nlu"], "nlu.jsonl:1"),
]


@pytest.mark.parametrize("params,files,cmd,named", BAD_INPUTS, ids=[c[-1] for c in BAD_INPUTS])
def test_bad_input_matrix_names_the_key_or_file_without_traceback(tmp_path, params, files, cmd, named):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    proc = run_cli(tmp_path, params, *cmd)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert named in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
