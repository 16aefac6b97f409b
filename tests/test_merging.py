import pytest
import torch

from stm.config import MergeSearchConfig
from stm.merging.inmemory import DeltaMerger
from stm.merging.methods import MergeError, get_method, mergekit_config, run_mergekit
from stm.merging.run import base_path, merged_retriever, save_full_model
from stm.merging.search import STRATEGIES, search
from stm.core import retriever as R
from stm.training.train import train
from test_training import tiny_cfg
from conftest import group_config


@pytest.fixture(scope="module")
def experts(tiny_model, tmp_path_factory):
    """Two tiny trained experts plus their merged-full folders and the base folder."""
    import random

    from conftest import make_triples
    from stm.io import write_jsonl

    root = tmp_path_factory.mktemp("merge")
    processed = root / "processed"
    for k, split in enumerate(("med_real", "search")):
        write_jsonl(processed / "splits" / f"{split}.jsonl", make_triples(16, split, seed=k + 10))
    adapters, full = [], []
    for k, split in enumerate(("med_real", "search")):
        cfg = tiny_cfg(tiny_model, max_steps=4, seed=k)
        train(cfg, split, root / split, processed)
        adapters.append(root / split / "adapter")
    for split, a in zip(("med_real", "search"), adapters):
        full.append(save_full_model(a, root / "full" / split, adapters[0]))
    base = save_full_model(base_path(adapters[0]), root / "full" / "base", adapters[0])
    random.seed(0)
    return adapters, full, base, root


PROBE = ["the patients with covid vaccine response", "cancer cells protein expression increased"]


@pytest.mark.parametrize("method,weights,densities", [("linear", [0.3, 0.9], None), ("task_arithmetic", [0.4, 0.7], None),
                                                       ("ties", [0.6, 0.8], [0.3, 0.9]), ("ties", [0.0, 0.8], [0.5, 0.5])])
def test_inmemory_merge_equals_mergekit(experts, method, weights, densities):
    adapters, full, base, root = experts
    cfg = mergekit_config(method, full, weights, base, densities)
    out = run_mergekit(cfg, root / f"mk-{method}-{weights[0]}")
    merged = merged_retriever(adapters[0], out, "float32")
    mem = DeltaMerger(adapters, "float32").merge(get_method(method), weights, densities)
    a, b = R.encode(merged, PROBE, R.DOCUMENT), R.encode(mem, PROBE, R.DOCUMENT)
    assert (a - b).abs().max() < 1e-5
    # and the merge is not trivially one of the experts
    e0 = R.load(adapters[0], "float32")
    assert (R.encode(e0, PROBE, R.DOCUMENT) - a).abs().max() > 1e-4


def test_ties_merge_runs_and_is_finite(experts):
    adapters, full, base, root = experts
    out = run_mergekit(mergekit_config("ties", full, [0.5, 0.5], base, [0.5, 0.7]), root / "mk-ties")
    emb = R.encode(merged_retriever(adapters[0], out, "float32"), PROBE, R.DOCUMENT)
    assert emb.isfinite().all()


@pytest.mark.parametrize("bad,match", [
    (dict(method="nope"), "unknown merge method"),
    (dict(weights=[-0.1, 0.5]), "weights must be >= 0"),
    (dict(method="ties", densities=[0.5, 1.5]), "densities must lie in"),
    (dict(method="ties", densities=None), "needs one density"),
    (dict(weights=[0.5]), "2 experts"),
])
def test_bad_merge_parameters_are_refused_before_work(experts, bad, match):
    adapters, full, base, root = experts
    args = dict(method="linear", weights=[0.5, 0.5], densities=None) | bad
    with pytest.raises(MergeError, match=match):
        mergekit_config(args["method"], full, args["weights"], base, args["densities"])


def test_experts_with_different_bases_are_refused(experts, tmp_path):
    adapters, full, base, root = experts
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(full[1], other)
    rec = json.loads((other / "merge_source.json").read_text()) | {"backbone_path": "/elsewhere"}
    (other / "merge_source.json").write_text(json.dumps(rec))
    with pytest.raises(MergeError, match="different base"):
        mergekit_config("linear", [full[0], other], [0.5, 0.5], base)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_search_strategies_respect_budget_and_find_optimum(strategy):
    cfg = MergeSearchConfig(strategy=strategy, budget=30, seed=1)
    target = [0.8, 0.2, 0.5]

    def score(c):
        return -sum((w - t) ** 2 for w, t in zip(c.weights, target))

    hist = search(strategy, score, 3, cfg, uses_density=True)
    assert len(hist) == 30
    assert all(h["densities"] and all(0 <= d <= 1 for d in h["densities"]) for h in hist)
    assert max(h["score"] for h in hist) > score(type("C", (), {"weights": [0.5, 0.5, 0.5]}))


class Killed(Exception):
    pass


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_killed_search_resumes_from_its_score_cache(strategy, tmp_path):
    """A search killed after 3 scores, rerun: the same history as an uninterrupted run, only the rest scored."""
    from stm.merging.search import ScoreCache

    cfg = MergeSearchConfig(strategy=strategy, budget=8, seed=3)
    calls = []

    def score(c):
        calls.append(c)
        return -sum((w - 0.3) ** 2 for w in c.weights) - sum((d - 0.5) ** 2 for d in c.densities)

    def dying(c):
        if len(calls) == 3:
            raise Killed
        return score(c)

    reference = search(strategy, score, 3, cfg, True)
    calls.clear()
    path = tmp_path / "ties.jsonl"
    with pytest.raises(Killed):
        search(strategy, dying, 3, cfg, True, ScoreCache(path, "fp"))
    assert len(path.read_text().splitlines()) == 3
    with path.open("a") as f:
        f.write('{"fingerprint": "fp", "cand')            # a kill in the middle of a write
    calls.clear()
    resumed = search(strategy, score, 3, cfg, True, ScoreCache(path, "fp"))
    assert resumed == reference
    assert len(calls) == 8 - 3
    calls.clear()                                          # a changed input (fingerprint) rescores everything
    assert search(strategy, score, 3, cfg, True, ScoreCache(path, "other")) == reference
    assert len(calls) == 8
    assert len(ScoreCache(path, "fp").scores) == 8        # the torn line did not swallow the next one


def test_full_model_folders_are_reused_only_for_the_same_adapter(experts):
    """Scratch full-model folders survive an interrupted merge stage; one built from another adapter is rebuilt."""
    import json

    from stm.io import sha256_file

    adapters, full, base, root = experts
    weights = full[0] / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert save_full_model(adapters[0], full[0], adapters[0]) == full[0]
    assert weights.stat().st_mtime_ns == before  # same source: not rebuilt
    out = save_full_model(adapters[1], full[0], adapters[0])  # another expert into the same folder: rebuilt
    assert sha256_file(out / "model.safetensors") == sha256_file(full[1] / "model.safetensors")
    save_full_model(adapters[0], full[0], adapters[0])  # put it back for the other tests


def test_recorded_mergekit_configs_do_not_name_this_machine(experts, monkeypatch, tmp_path):
    from stm import paths
    from stm.merging.run import portable

    adapters, full, base, root = experts
    monkeypatch.setattr(paths, "ROOT", root)
    cfg = portable(mergekit_config("ties", full, [0.5, 0.5], base, [0.5, 0.5]))
    assert cfg["base_model"] == "full/base"
    assert [m["model"] for m in cfg["models"]] == ["full/med_real", "full/search"]


def test_merge_stage_rerun_reuses_every_cached_score(experts, texts, tmp_path):
    """The whole stage twice with the same experts: the second run scores nothing again and reports the same."""
    import json

    from stm.merging.run import run

    mcfg, ecfg, adapter_map, folder = _merge_stage_inputs(experts, texts, tmp_path)
    first = run(mcfg, ecfg, adapter_map, tmp_path / "tasks", tmp_path / "merged", tmp_path / "merging.json")
    again = run(mcfg, ecfg, adapter_map, tmp_path / "tasks", tmp_path / "merged", tmp_path / "merging.json")
    a, b = first.methods["linear"], again.methods["linear"]
    assert (a.candidates_reused, b.candidates_reused) == (0, 3)
    assert b.history == a.history and b.test.scores == a.test.scores
    assert b.seconds_per_candidate == a.seconds_per_candidate > 0  # from the cache, not lost
    assert not (tmp_path / ".merged-inputs").exists()
    assert json.loads((tmp_path / "merging.json").read_text())["methods"]["linear"]["candidates_reused"] == 3
    # the shipped merge is a sentence-transformers folder that reproduces its recorded test scores as a user loads it
    from sentence_transformers import SentenceTransformer

    from stm.core.evaluation import Encoder, evaluate

    user = SentenceTransformer(str(tmp_path / "merged" / "linear"), device="cpu")
    again_scores = evaluate(Encoder(user, "user"), [str(folder)], "test").scores
    assert again_scores == a.test.scores
    assert a.inmemory_vs_mergekit_max_abs_diff < 1e-4


def _merge_stage_inputs(experts, texts, tmp_path):
    """The merge stage's configs, its two experts and a one-task BEIR folder with a dev and a test split."""
    import shutil

    from stm.core.beir import write_beir

    adapters = experts[0]
    folder = tmp_path / "task"
    corpus = {f"d{i}": t for i, t in enumerate(texts)}
    queries = {"q0": "covid vaccine", "q1": "heart disease"}
    for split in ("dev", "test"):  # one folder, both splits
        write_beir(tmp_path / split, corpus, queries, {"q0": {"d0": 1}, "q1": {"d2": 1}}, split, {"name": "T"})
    shutil.copytree(tmp_path / "test", folder)
    shutil.copy(tmp_path / "dev" / "qrels" / "dev.tsv", folder / "qrels" / "dev.tsv")
    mcfg = group_config("merging", methods=["linear"], experts=["med_real", "search"],
                         search=MergeSearchConfig(strategy="grid", budget=3))
    ecfg = group_config("evaluation", tasks=[str(folder)], dtype="float32", batch_size=4)
    return mcfg, ecfg, dict(zip(("med_real", "search"), adapters)), folder


KILLED_MERGE = """
import sys, time, json
from pathlib import Path
from stm.config import EvaluationConfig, MergingConfig
from stm.merging import run as M

real = M.dev_score
def slow(*a, **k):  # each candidate waits once scored, so the parent can kill between candidates
    value = real(*a, **k)
    time.sleep(0.5)
    return value
M.dev_score = slow
mcfg, ecfg = MergingConfig.model_validate_json(sys.argv[1]), EvaluationConfig.model_validate_json(sys.argv[2])
M.run(mcfg, ecfg, {k: Path(v) for k, v in json.loads(sys.argv[3]).items()}, Path(sys.argv[4]).parent / "tasks",
      Path(sys.argv[4]), Path(sys.argv[5]))
"""


def test_a_sigkilled_merge_search_resumes_to_the_same_choice(experts, texts, tmp_path):
    """SIGKILL of a real merge stage after its first scored candidate, then a rerun: the scored candidates are read
    back, not scored again, and the search ends as an uninterrupted one does."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from stm.merging.run import run

    mcfg, ecfg, adapter_map, _ = _merge_stage_inputs(experts, texts, tmp_path)
    scores = tmp_path / "killed" / ".merged-search" / "linear.jsonl"
    script = tmp_path / "child.py"
    script.write_text(KILLED_MERGE)
    proc = subprocess.Popen([sys.executable, str(script), mcfg.model_dump_json(), ecfg.model_dump_json(),
                             json.dumps({k: str(v) for k, v in adapter_map.items()}), str(tmp_path / "killed" / "merged"),
                             str(tmp_path / "killed" / "merging.json")], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 180
    while (not scores.exists() or not scores.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "merging.json").exists()
    resumed = run(mcfg, ecfg, adapter_map, tmp_path / "tasks", tmp_path / "killed" / "merged", tmp_path / "killed" / "merging.json")
    whole = run(mcfg, ecfg, adapter_map, tmp_path / "tasks", tmp_path / "whole" / "merged", tmp_path / "whole" / "merging.json")
    a, b = resumed.methods["linear"], whole.methods["linear"]
    assert a.candidates_reused >= 1
    assert a.history == b.history and a.chosen == b.chosen and a.test.scores == b.test.scores


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_bf16_scratch_inputs_give_the_same_bf16_merge(experts, tmp_path, method):
    """Full-model inputs saved in the merge's dtype: half the disk, and mergekit's output is unchanged."""
    import json

    from safetensors.torch import load_file

    adapters, full, base, root = experts
    half = [save_full_model(a, tmp_path / f"half-{i}", adapters[0], "bfloat16") for i, a in enumerate(adapters)]
    half_base = save_full_model(base_path(adapters[0]), tmp_path / "half-base", adapters[0], "bfloat16")
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half[0]) < 0.6 * size(full[0])
    weights, densities = [0.6, 0.5], [0.5, 0.7]
    a = run_mergekit(mergekit_config(method, full, weights, base, densities, "bfloat16"), tmp_path / "from-fp32")
    b = run_mergekit(mergekit_config(method, half, weights, half_base, densities, "bfloat16"), tmp_path / "from-bf16")
    ta, tb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_dare_ties_is_seeded_so_the_final_merge_is_the_scored_candidate(experts, tmp_path):
    from safetensors.torch import load_file

    adapters, full, base, root = experts
    cfg = mergekit_config("dare_ties", full, [0.5, 0.5], base, [0.5, 0.5])
    a = load_file(run_mergekit(cfg, tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(run_mergekit(cfg, tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(run_mergekit(cfg, tmp_path / "c", seed=4) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_every_model_that_embeds_is_loaded_on_the_resolved_device(experts, tiny_model, monkeypatch):
    """With a GPU present (faked: CUDA reported available), every retriever the stages build or load receives it:
    the backbone (its evaluation, GEPA's scoring model), an expert's folder, the in-memory merge candidates, a
    merged model and the MiniLM-style plain folders. A recorder stands in for the constructor and builds on the CPU."""
    from sentence_transformers import SentenceTransformer

    from stm.merging.run import merged_retriever
    from stm.prompts.optimizers import backbone_retriever

    adapters, full, base, root = experts
    seen: list[str] = []
    real_init = SentenceTransformer.__init__

    def recorder(self, *args, device=None, **kwargs):
        seen.append(str(device))
        real_init(self, *args, device="cpu", **kwargs)

    monkeypatch.setattr(SentenceTransformer, "__init__", recorder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert R.default_device() == "cuda"
    backbone_retriever(group_config("training", backbone=str(tiny_model)))()       # GEPA's scorer, the backbone's evaluation
    R.load(adapters[0])                                                  # an expert, as evaluation loads it
    DeltaMerger(adapters)                                                # every merge candidate
    merged_retriever(adapters[0], full[1], "float32")                    # a final merge
    assert seen == ["cuda"] * 4


def test_a_method_merges_its_own_expert_variant(experts, texts, tmp_path):
    """merging.variants (Table 6's footnote: Phi-4-mini's Linear merge took Med-Real PO): Linear merges the variant,
    Task Arithmetic the training stage's own expert, in one stage run, and the record says which."""
    import shutil

    from stm.merging.run import run

    mcfg, ecfg, adapter_map, _ = _merge_stage_inputs(experts, texts, tmp_path)
    po = tmp_path / "med_real" / "variants" / "po" / "adapter"
    shutil.copytree(adapter_map["search"], po)  # another LoRA than Med-Real's own: its variant for Linear
    mcfg = mcfg.model_copy(update={"methods": ["linear", "task_arithmetic"], "variants": {"linear": {"med_real": "po"}},
                                   "search": mcfg.search.model_copy(update={"budget": 1})})
    own = {"linear": {"med_real": po, "search": adapter_map["search"]}}
    report = run(mcfg, ecfg, adapter_map, tmp_path / "tasks", tmp_path / "merged", tmp_path / "merging.json", method_adapters=own)
    linear, ta = report.methods["linear"], report.methods["task_arithmetic"]
    assert linear.variants == {"med_real": "po"} and "variants" not in ta.dump()
    assert [m["model"] for m in linear.mergekit_config["models"]][0].endswith("med_real-po")
    assert [m["model"] for m in ta.mergekit_config["models"]][0].endswith("med_real")
    probe = ["a probe sentence about heart disease in mice"]
    shipped = R.encode(R.load(tmp_path / "merged" / "linear", "float32"), probe, R.DOCUMENT)
    w = linear.chosen.weights
    with_variant = R.encode(DeltaMerger([po, adapter_map["search"]], "float32").merge(get_method("linear"), w), probe,
                            R.DOCUMENT)
    with_own = R.encode(DeltaMerger([adapter_map["med_real"], adapter_map["search"]], "float32").merge(
        get_method("linear"), w), probe, R.DOCUMENT)
    assert (shipped - with_variant).abs().max() < 1e-4 < (shipped - with_own).abs().max()


def test_the_merge_stage_finds_each_methods_expert_variant(tmp_path):
    """The training stage's own adapter unless merging.variants names another variant, then the one it trained beside."""
    from stm.core.records import TrainingRecord
    from stm.io import DataError
    from stm.merging.stage import expert_adapters
    from stm.paths import Layout

    layout = Layout("embedded", "b", tmp_path)
    experts = layout.experts
    for e, v in (("med_real", "ft"), ("search", "po")):
        (experts / e / "adapter").mkdir(parents=True)
        (experts / e / "adapter" / "adapter_config.json").write_text("{}")
        TrainingRecord(expert=e, backbone="b", retriever={}, variant=v, steps=1, world_size=1, loss={}, config={},
                       data={}, final_loss=None, query_truncated_fraction=0.0, mean_tokens_per_s=0.0,
                       environment={}).save(TrainingRecord.path(experts / e))
    mcfg = group_config("merging", methods=["linear", "ties"], experts=["med_real", "search"],
                         variants={"linear": {"med_real": "po", "search": "po"}})
    with pytest.raises(DataError, match=r"med_real/variants/po/adapter.*run the training stages"):
        expert_adapters(layout, mcfg, "linear")
    (experts / "med_real" / "variants" / "po" / "adapter").mkdir(parents=True)
    (experts / "med_real" / "variants" / "po" / "adapter" / "adapter_config.json").write_text("{}")
    assert expert_adapters(layout, mcfg, "linear") == {"med_real": experts / "med_real" / "variants" / "po" / "adapter",
                                               "search": experts / "search" / "adapter"}  # its own variant already
    assert expert_adapters(layout, mcfg, "ties") == {e: experts / e / "adapter" for e in ("med_real", "search")}
    assert mcfg.merge_variants("med_real") == ["po"] and mcfg.merge_variants("nlu") == []


@pytest.mark.parametrize("density", [0.0, 0.1, 0.37, 0.9, 1.0])
def test_ties_trim_by_threshold_keeps_the_entries_mergekit_keeps(density):
    """``inmemory.magnitude`` (a k-th value threshold) against mergekit's sort, on distinct magnitudes and on ties."""
    from mergekit.sparsify import SparsificationMethod, sparsify

    from stm.merging.inmemory import magnitude

    torch.manual_seed(0)
    distinct = torch.randn(48, 20) @ torch.randn(20, 36)
    tied = torch.randint(-3, 4, (48, 36)).float()  # seven magnitudes: the threshold is tied, mergekit decides
    for delta in (distinct, tied):
        ref = sparsify(delta, density=density, method=SparsificationMethod.magnitude)
        assert torch.equal(magnitude(delta, density), ref)
    if 0 < density < 1:
        assert 0 < int((magnitude(distinct, density) != 0).sum()) < distinct.numel()
