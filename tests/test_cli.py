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


def test_an_ablation_index_out_of_range_is_refused(tmp_path):
    proc = run_cli(tmp_path, "profile: smoke\n", "ablate", "size", "7")
    assert proc.returncode == 2 and "out of range" in proc.stderr


def test_unknown_expert_is_refused(tmp_path):
    proc = run_cli(tmp_path, "profile: smoke\n", "train", "--expert", "cardiology")
    assert proc.returncode == 2 and "invalid choice: 'cardiology'" in proc.stderr and "Traceback" not in proc.stderr


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
    # a complete first row, so the malformed second line itself is what the message names
    ("profile: smoke\n", {"data/processed/smoke/splits/nlu.jsonl":
                          '{"id": "a", "split": "nlu", "instruction": "i", "query": "q", "positive": "p", "negative": "n"}'
                          '\n{oops\n'}, ["train", "--expert", "nlu"], "nlu.jsonl:2"),
    # the one boundary: a library's I/O error, an empty task list, an unknown profile for a read-only command
    ("profile: smoke\n", {}, ["evaluate", "--model", "no/such/folder", "--name", "x"], "no/such/folder"),
    ("profile: smoke\nevaluation:\n  tasks: []\n", {}, ["baselines"], "evaluation.tasks"),
    ("profile: smoke\n", {}, ["tasks", "--profile", "huge"], "invalid choice: 'huge'"),
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


def test_a_params_file_that_is_not_utf8_names_its_line(tmp_path):
    (tmp_path / "params.yaml").write_bytes(b"profile: smoke\n# caf\xe9 au lait\n")
    env = {**os.environ, "STM_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "stm", "data"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "params.yaml:2:" in proc.stderr and "not UTF-8" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_stm_debug_shows_the_traceback_of_a_bad_input(tmp_path):
    env = {**os.environ, "STM_ROOT": str(tmp_path), "STM_DEBUG": "1"}
    (tmp_path / "params.yaml").write_text("profile: smoke\n")
    proc = subprocess.run([sys.executable, "-m", "stm", "merge"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "expert adapters missing" in proc.stderr


def test_a_bug_keeps_its_traceback():
    """The line between bad input and our bugs: a TypeError of ours is not turned into a one-line error."""
    from stm.__main__ import bad_input
    from stm.io import DataError

    assert bad_input(TypeError("unsupported operand")) is None
    assert bad_input(DataError("f.jsonl:3: bad")) == "f.jsonl:3: bad"
    assert bad_input(FileNotFoundError(2, "No such file or directory", "x/y.json")) == "x/y.json: No such file or directory"


def test_train_without_a_name_writes_a_scratch_run_outside_every_tracked_output(monkeypatch, capsys):
    """`python -m stm train --expert search` (the README's example) must not overwrite the main line's Search expert,
    a DVC output, nor its committed record in results/."""
    from stm import __main__ as cli
    from stm import paths
    from stm.training import stage

    seen = {}
    monkeypatch.setattr(stage, "train_and_evaluate", lambda cfg, ecfg, expert, name, **kw: seen.update(kw, name=name))
    assert cli.main(["train", "--expert", "search"]) == 0
    out, result = seen["out"], seen["result"]
    assert seen["name"] is None and out.is_relative_to(paths.ROOT / "runs") and result.is_relative_to(out)
    for tracked in ("results", "artifacts", "reports", "data"):
        assert not out.is_relative_to(paths.ROOT / tracked)
    assert "scratch run: runs/" in capsys.readouterr().out
    assert "runs/" in (paths.ROOT / ".gitignore").read_text()
