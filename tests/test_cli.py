import os
import pytest
import subprocess
import sys

from conftest import params_text


def run_cli(tmp_path, params: str, *args):
    (tmp_path / "params.yaml").write_text(params_text(params))
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


@pytest.mark.parametrize("args,named", [(["gepa", "huge"], "'huge' is not a budget"),
                                        (["po", "gp10"], "the index 'gp10' is not a number"),
                                        (["variant", "1"], "does not name the variant '1'")])
def test_an_ablation_cell_name_is_checked(tmp_path, args, named):
    proc = run_cli(tmp_path, "profile: smoke\n", "ablate", *args)
    assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr


def test_a_stage_of_several_cells_checks_them_all_before_the_first_runs(tmp_path):
    """`ablate po 0,9`: the DVC stage runs its cells in turn in one process; a bad one fails before any is trained."""
    proc = run_cli(tmp_path, "profile: smoke\n", "ablate", "po", "0,9")
    assert proc.returncode == 2 and "index 9 is out of range" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("artifacts/**/po/0"))
    proc = run_cli(tmp_path, "profile: smoke\n", "ablate", "size", "0", "--seed-index", "0,x")
    assert proc.returncode == 2 and "--seed-index: 'x' is not a number" in proc.stderr


def test_a_gepa_budget_the_profile_does_not_run_writes_a_record_that_says_so(tmp_path):
    """Every profile has every declared output of ablate_gepa; the embedded and smoke profiles run no GEPA row."""
    import json

    proc = run_cli(tmp_path, "profile: smoke\nbackbone: smollm2-2l\n", "ablate", "gepa", "medium")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "results" / "smoke" / "smollm2-2l" / "ablations" / "gepa_medium.json").read_text())
    assert record["cell"] == "gepa/medium" and "does not name 'medium'" in record["not_run"]
    assert (tmp_path / "artifacts" / "smoke" / "smollm2-2l" / "ablations" / "gepa" / "medium" / "NOT_RUN.txt").exists()


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
    # triple fields must be non-empty strings: a null query, a list-valued positive
    ("profile: smoke\n", {"data/processed/smoke/splits/nlu.jsonl":
                          '{"id": "a", "split": "nlu", "instruction": "i", "query": null, "positive": "p", "negative": "n"}\n'},
     ["train", "--expert", "nlu"], "nlu.jsonl:1: field(s) must be text: query is null"),
    ("profile: smoke\n", {"data/processed/smoke/splits/nlu.jsonl":
                          '{"id": "a", "split": "nlu", "instruction": "i", "query": "q", "positive": ["p"], "negative": "n"}\n'},
     ["train", "--expert", "nlu"], "nlu.jsonl:1: field(s) must be text: positive is a list"),
    # the one boundary: a library's I/O error, an empty task list, an unknown profile for a read-only command
    ("profile: smoke\n", {}, ["evaluate", "--model", "no/such/folder", "--name", "x"], "no/such/folder"),
    ("profile: smoke\nevaluation:\n  tasks: []\n", {}, ["baselines"], "evaluation.tasks"),
    ("profile: smoke\n", {}, ["tasks", "--profile", "huge"], "invalid choice: 'huge'"),
    # every profile's block is validated as merged, not only the active one's (the rehearsal inherits the paper's)
    ("profile: smoke\nprofiles:\n  paper:\n    training: {batch_size: one}\n", {}, ["data"],
     "(profile paper, backbone smollm2-12l): training.batch_size"),
    # a group's own wrong value, which the active profile happens to override, is still refused
    ("profile: smoke\ntraining: {max_steps: lots}\nprofiles:\n  smoke:\n    training: {max_steps: 2}\n", {}, ["data"],
     "(profile embedded, backbone smollm2-12l): training.max_steps"),
    # a backbone typo is never sent to the hub
    ("profile: smoke\nbackbone: smollm3\n", {}, ["backbone"], "backbone 'smollm3': not one of the presets"),
    # --name is one folder name: it cannot climb out of the run folders
    ("profile: smoke\n", {}, ["train", "--expert", "nlu", "--name", "../../outside"], "is not a plain name"),
    ("profile: smoke\n", {}, ["evaluate", "--model", "x", "--name", "/tmp/x"], "is not a plain name"),
    # the training launch: the batch must split over the processes, checked before any process starts
    ("profile: smoke\nprofiles:\n  smoke:\n    training: {processes: 3, batch_size: 8}\n", {},
     ["train", "--expert", "nlu", "--no-eval"],
     "training.batch_size: 8 is not divisible by the 3 training processes"),
    # a notebook parameter that is not key=value
    ("profile: smoke\n", {}, ["notebook", "03_train", "-p", "expert"], "'expert' is not key=value"),
    # an endpoint generator whose API key is not set
    ("profile: smoke\nsynthesis:\n  generator: {kind: openai, model: gpt-4.1, api_key_env: STM_NO_SUCH_KEY}\n",
     {"data/processed/smoke/splits/search.jsonl":
      '{"id": "a", "split": "search", "instruction": "i", "query": "q", "positive": "p", "negative": "n"}\n'},
     ["synthesize"], "STM_NO_SUCH_KEY is not set"),
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
    (tmp_path / "params.yaml").write_text(params_text("profile: smoke\n"))
    proc = subprocess.run([sys.executable, "-m", "stm", "merge"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "expert adapters missing" in proc.stderr


def test_a_bug_keeps_its_traceback():
    """The line between bad input and our bugs: a TypeError of ours is not turned into a one-line error."""
    from stm.__main__ import bad_input
    from stm.io import DataError

    assert bad_input(TypeError("unsupported operand")) is None
    assert bad_input(DataError("f.jsonl:3: bad")) == "f.jsonl:3: bad"
    assert bad_input(FileNotFoundError(2, "No such file or directory", "x/y.json")) == "x/y.json: No such file or directory"

    class PapermillExecutionError(Exception):  # a notebook stage's error, as papermill hands it back: by class name
        def __init__(self, ename, evalue):
            super().__init__(evalue)
            self.ename, self.evalue = ename, evalue

    assert bad_input(PapermillExecutionError("MergeError", "merging: adapters missing")) == "merging: adapters missing"
    assert bad_input(PapermillExecutionError("KeyError", "'x'")) is None


def test_every_bad_input_class_the_cli_sorts_by_exists_and_sorting_imports_nothing():
    """The CLI's table of bad-input classes names real exception classes (a rename would silently turn a bad input
    into a traceback), and sorting an error imports none of their modules: a bad params.yaml answers before torch."""
    import importlib

    from stm.__main__ import INPUT_ERRORS

    for module, names in INPUT_ERRORS.items():
        for n in names:
            assert issubclass(getattr(importlib.import_module(module), n), Exception), f"{module}.{n}"
    code = ("import sys; from stm.__main__ import bad_input; from stm.config import ConfigError; "
            "print(bad_input(ConfigError('params.yaml: data.miner')), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out == ["params.yaml:", "data.miner", "False"]


def test_train_without_a_name_writes_a_scratch_run_outside_every_tracked_output(monkeypatch, capsys):
    """`python -m stm train --expert search` (the README's example) must not overwrite the main line's Search expert,
    a DVC output, nor its committed record in results/."""
    from stm import __main__ as cli
    from stm import paths
    from stm.training import stage

    seen = {}
    monkeypatch.setattr(stage, "train_and_evaluate", lambda layout, cfg, ecfg, expert, name, **kw: seen.update(kw, name=name))
    assert cli.main(["train", "--expert", "search"]) == 0
    out, result = seen["out"], seen["result"]
    assert seen["name"] is None and out.is_relative_to(paths.ROOT / "runs") and result.is_relative_to(out)
    for tracked in ("results", "artifacts", "reports", "data"):
        assert not out.is_relative_to(paths.ROOT / tracked)
    assert "scratch run: runs/" in capsys.readouterr().out
    assert "runs/" in (paths.ROOT / ".gitignore").read_text()


def test_evaluate_refuses_a_raw_language_model_and_points_to_the_backbone_command(tmp_path, tiny_model):
    """A causal LM folder would be wrapped in a default mean pooling, without our prompts, and scored: a number that
    means nothing. Refused, with the command that scores an untrained backbone properly."""
    proc = run_cli(tmp_path, "profile: smoke\n", "evaluate", "--model", str(tiny_model), "--name", "raw")
    assert proc.returncode == 2 and "a language model without a pooling module" in proc.stderr, proc.stderr[-2000:]
    assert "python -m stm backbone" in proc.stderr and str(tiny_model) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_beir_folder_with_empty_queries_names_the_file(tmp_path):
    folder = tmp_path / "mytask"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "a document"}\n')
    (folder / "queries.jsonl").write_text("")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    proc = run_cli(tmp_path, f"profile: smoke\nevaluation:\n  tasks: [{folder}]\n  baselines: [bm25]\n", "baselines")
    assert proc.returncode == 2 and f"{folder / 'queries.jsonl'}: no queries" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_an_unknown_notebook_parameter_is_refused_before_the_kernel_starts(tmp_path):
    import shutil
    from stm import paths

    (tmp_path / "notebooks").mkdir()
    shutil.copy(paths.ROOT / "notebooks" / "05_results.ipynb", tmp_path / "notebooks")
    proc = run_cli(tmp_path, "profile: smoke\n", "notebook", "05_results", "-p", "colour=red")
    assert proc.returncode == 2 and "no parameter(s) ['colour']" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "reports").exists()


def test_a_library_error_on_a_broken_model_folder_is_one_line(tmp_path):
    """A sentence-transformers folder whose weights are missing: transformers' own error, as one line, no traceback."""
    import json

    folder = tmp_path / "m"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"}]))
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 32}')
    proc = run_cli(tmp_path, "profile: smoke\n", "evaluate", "--model", str(folder), "--name", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(folder) in errors[0] and "model.safetensors" in errors[0]


@pytest.mark.parametrize("profile,backbone", [("rehearsal", "gemma-2b"), ("paper", "phi4-mini")])
def test_plan_prints_each_stage_cost_from_the_measured_throughput(tmp_path, profile, backbone):
    """`python -m stm plan`: GPU-hours, memory and disk per stage before anything runs, from the H200 measurement
    and mteb's task statistics (the 12 tasks hold about 532K documents)."""
    import re

    from stm import paths

    params = (paths.ROOT / "params.yaml").read_text()
    params = re.sub(r"(?m)^profile: \S+", f"profile: {profile}", params)
    (tmp_path / "benchmarks").symlink_to(paths.ROOT / "benchmarks")
    proc = run_cli(tmp_path, re.sub(r"(?m)^backbone: \S+", f"backbone: {backbone}", params), "plan")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert f"profile {profile}, backbone {backbone}; throughput of {backbone} measured on NVIDIA H200" in out
    assert "12 test tasks, 531,880 documents" in out
    hours = {m[1].strip(): float(m[2]) for m in re.finditer(r"(?m)^(\S+(?: \S+)?)\s+([\d.]+)", out)}
    assert {"backbone", "train@all", "merge", "ablate_variant", "main line", "with ablations"} <= set(hours)
    assert hours["train@all"] > hours["train@med_real"] > 0 and hours["main line"] < hours["with ablations"]


def test_every_command_and_flag_has_help_and_the_help_ends_with_examples():
    import argparse

    from stm.__main__ import parser

    p = parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    helped = {c.dest for c in sub._choices_actions}
    assert helped == set(sub.choices), f"commands without help: {set(sub.choices) - helped}"
    for name, cmd in sub.choices.items():
        for action in cmd._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"python -m stm {name}: {action.option_strings or action.dest} has no help"
    assert p.format_help().rstrip().splitlines()[-1].startswith("  STM_DEBUG=1") and "examples:" in p.format_help()
