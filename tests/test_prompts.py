import json

import pytest

from stm.io import DataError

from stm.prompts import optimizers
from stm.core import retriever as R
from stm.config import FormatConfig
from conftest import group_config


class FakeGenerator:
    """Stands in for any registry generator: returns fixed, partly garbage outputs."""

    id = "fake"

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.calls = 0

    def settings(self):
        return {"kind": "fake"}

    def generate(self, prompts, seed_offset=0):
        out = []
        for _ in prompts:
            out.append(self.outputs[self.calls % len(self.outputs)])
            self.calls += 1
        return out


def test_gp_pools_are_deduplicated_filtered_and_nested(tmp_path, monkeypatch):
    outputs = ["Find the documents that best answer the query at hand.", "Sure! Here is a prompt.",
               "Rank every passage by how well it answers the question.", "Find the documents that best answer the query at hand.",
               "Match the query to passages that contain its answer and its context.", "ok"]
    monkeypatch.setattr(optimizers, "build_generator", lambda cfg: FakeGenerator(outputs))
    cfg = group_config("prompts", gp_sizes=[1, 2, 3], gp_size=2)
    selected = optimizers.run(cfg, tmp_path, tmp_path / "splits_dev")  # the main line: its own pool only, one batch of samples
    assert not (tmp_path / "gp.json").exists() and selected["sampled"] == cfg.generator.batch_size
    optimizers.gp_pools(cfg, tmp_path)  # the ablation's pools extend the same sample cache
    gp = json.loads((tmp_path / "gp.json").read_text())
    assert gp["pools"]["1"] == gp["pools"]["3"][:1] and len(gp["pools"]["3"]) == 3
    assert len(set(gp["pools"]["3"])) == 3
    assert gp["counts"]["meta_commentary"] >= 1 and gp["counts"]["duplicate"] >= 1 and gp["counts"]["too_short"] >= 1
    assert selected["pools"]["*"] == gp["pools"]["2"]
    assert json.loads((tmp_path / "selected.json").read_text())["optimizer"] == "gp"


def test_po_training_reads_the_selected_pool(tiny_model, processed, tmp_path):
    from stm.io import write_json
    from stm.training.data import load_rows
    from test_training import tiny_cfg

    write_json(processed / "prompts" / "selected.json", {"optimizer": "gp", "pools": {"*": ["P one", "P two"]}})
    rows, record = load_rows(tiny_cfg(tiny_model, variant="po"), "nlu", processed, processed / "prompts")
    assert {r["instruction"] for r in rows} == {"P one", "P two"}
    assert record["prompts"]["optimizer"] == "gp"
    write_json(processed / "prompts" / "selected.json", {"optimizer": "gp", "size": 10, "pools": {"*": ["P one"]}})
    assert load_rows(tiny_cfg(tiny_model, variant="po"), "nlu", processed, processed / "prompts")[1]["prompts"][
        "optimizer"] == "gp10"


def test_gepa_runs_through_the_library_on_dev_rows_and_saves_history(tiny_model, processed, tmp_path, monkeypatch):
    from conftest import make_triples
    from stm.io import write_jsonl
    from stm.prompts import gepa_adapter

    rows = make_triples(12, "nlu", seed=5)
    for r in rows[:7]:  # the split's own, most frequent instruction seeds GEPA (the paper's set-up)
        r["instruction"] = "Given a premise, retrieve a hypothesis that is entailed by the premise"
    write_jsonl(processed / "splits_dev" / "nlu.jsonl", rows)
    monkeypatch.setattr(gepa_adapter, "build_generator", lambda cfg: FakeGenerator(
        ["```\nRetrieve the abstract whose findings support the given claim about patients.\n```"]))
    retriever = R.build(str(tiny_model), FormatConfig(max_query_tokens=16, max_passage_tokens=24))
    cfg = group_config("prompts", optimizer="gepa", gepa={"budget": "light", "max_metric_calls": 30, "train_examples": 6,
                                               "reflection_minibatch_size": 2})
    best, history = gepa_adapter.optimize_split(cfg, "nlu", tmp_path, processed / "splits_dev", retriever)
    assert history and all(0.0 <= h["val_score"] <= 1.0 for h in history)
    assert history[0]["instruction"] == "Given a premise, retrieve a hypothesis that is entailed by the premise"
    assert best in [h["instruction"] for h in history]
    # the paper's train and validation sets are full-sized and disjoint: too few dev rows is an error, not a shrink
    with pytest.raises(DataError, match=r"nlu.jsonl: GEPA \(light\) needs 7 train \+ 7 validation examples, found 12"):
        gepa_adapter.optimize_split(cfg.model_copy(update={"gepa": cfg.gepa.model_copy(update={"train_examples": 7})}),
                                    "nlu", tmp_path, processed / "splits_dev", retriever)


def test_the_paper_profile_runs_gepa_as_the_paper_set_it_up(tmp_path):
    """Gemma's PO: GEPA-medium (200 train + 200 validation examples), seeded with each split's own instruction,
    Llama-3.3-70B at temperature 0.7 and 1000 tokens, with enough dev rows held out for it."""
    from stm import config

    p = config.load("prompts", profile="paper")
    assert p.gepa.seed == "data" and p.gepa.train_examples is None and p.gepa.max_metric_calls is None
    import yaml

    from stm import paths

    raw = yaml.safe_load(paths.PARAMS.read_text())
    raw["backbone"] = "gemma-2b"  # the one key that switches backbone
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    gemma = config.load("prompts", tmp_path / "params.yaml", profile="paper")
    assert (gemma.optimizer, gemma.gepa.budget) == ("gepa", "medium")
    from stm.prompts.gepa_adapter import BUDGETS

    assert BUDGETS["medium"][:2] == (200, 5) and config.load("data", profile="paper").dev_rows >= 2 * 300
    assert (p.generator.temperature, p.generator.max_new_tokens) == (0.7, 1000)


def test_unknown_optimizer_is_refused():
    from stm.config import ConfigError, validate

    with pytest.raises(ConfigError, match="prompts.optimizer"):
        validate("prompts", {"optimizer": "magic"})


def test_gp_keeps_the_first_sentence_within_the_word_limit(tmp_path, monkeypatch):
    from stm.prompts import optimizers

    outs = iter(["Retrieve documents that answer the query. Then rank them by relevance and explain why.",
                 "Find passages relevant to the question asked by the user today.",
                 "An extremely long rambling prompt that goes on and on about nothing in particular for many words."])
    monkeypatch.setattr(optimizers, "build_generator", lambda cfg: type("G", (), {
        "id": "fake", "settings": lambda self: {}})())
    monkeypatch.setattr(optimizers, "generate_cached",
                        lambda gen, prompts, path, bs, desc, sample_ids: [next(outs, None) for _ in prompts])
    cfg = group_config("prompts", gp_sizes=[2], gp_size=2, gp_max_words=12)
    kept, meta = optimizers.generic_prompts(cfg, tmp_path, 2)
    assert kept == ["Retrieve documents that answer the query.",
                    "Find passages relevant to the question asked by the user today."]
    assert meta["counts"]["too_long"] == 1


def test_gepa_budget_follows_dspy_auto_and_scores_more_than_the_seed(tiny_model, processed, tmp_path, monkeypatch):
    """DSPy's auto rule (the paper's GEPA ran through DSPy): medium, one predictor, 200 validation examples allows
    1,690 metric calls, always more than the validation set. At that rule's ratios on a small dev set, gepa scores
    more than the seed on validation and returns the candidate with the best validation score."""
    from conftest import make_triples
    from stm.config import ConfigError
    from stm.io import write_jsonl
    from stm.prompts import gepa_adapter

    assert gepa_adapter.auto_metric_calls("medium", 200) == 1690
    for level, (n, _) in gepa_adapter.BUDGETS.items():
        assert gepa_adapter.auto_metric_calls(level, n) > n
    write_jsonl(processed / "splits_dev" / "nlu.jsonl", make_triples(12, "nlu", seed=5))
    proposals = [f"```\n{text}\n```" for text in (
        "Retrieve the abstract whose findings support the claim.", "Find passages about the same disease.",
        "Given a question, return the passage that answers it.", "Match the query words in the passage title.",
        "Retrieve documents on the drug and its dose.", "Find the study that tested this hypothesis.")]
    monkeypatch.setattr(gepa_adapter, "build_generator", lambda cfg: FakeGenerator(proposals))
    retriever = R.build(str(tiny_model), FormatConfig(max_query_tokens=16, max_passage_tokens=24))
    cfg = group_config("prompts", optimizer="gepa", gepa={"budget": "light", "max_metric_calls": None, "train_examples": 4,
                                               "reflection_minibatch_size": 2})
    best, history = gepa_adapter.optimize_split(cfg, "nlu", tmp_path, processed / "splits_dev", retriever)
    assert len(history) > 1  # the seed and at least one proposal were scored on the validation set
    assert best == max(history, key=lambda h: h["val_score"])["instruction"]
    with pytest.raises(ConfigError, match="max_metric_calls: 4 calls do not exceed the 4 validation examples"):
        gepa_adapter.optimize_split(cfg.model_copy(update={"gepa": cfg.gepa.model_copy(update={"max_metric_calls": 4})}),
                                    "nlu", tmp_path / "again", processed / "splits_dev", retriever)


def test_gp_as_generated_keeps_whole_prompts_unfiltered_as_the_paper(tmp_path, monkeypatch):
    """The paper profile trains on the generated prompts as written: nothing cut to a sentence, nothing filtered for
    brackets or "here are"; only empty answers are dropped."""
    from stm import config
    from stm.prompts import optimizers

    whole = ["Here are the instructions: [retrieve] documents that answer the query. Then rank them.",
             "Find passages {relevant} to the question. " * 30]
    outs = iter(whole + [""])
    monkeypatch.setattr(optimizers, "build_generator", lambda cfg: type("G", (), {
        "id": "fake", "settings": lambda self: {}})())
    monkeypatch.setattr(optimizers, "generate_cached",
                        lambda gen, prompts, path, bs, desc, sample_ids: [next(outs, None) for _ in prompts])
    cfg = group_config("prompts", gp_sizes=[3], gp_size=3, gp_max_words=12, gp_as_generated=True)
    kept, meta = optimizers.generic_prompts(cfg, tmp_path, 3)
    assert kept == [w.strip() for w in whole] and meta["counts"]["empty"] == 1
    paper = config.load("prompts", profile="paper")
    assert paper.gp_as_generated and not config.load("prompts", profile="embedded").gp_as_generated
