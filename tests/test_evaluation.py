import pytest

from stm.config import FormatConfig
from stm.core.beir import write_beir
from stm.core import retriever as R
from stm.core.evaluation import Encoder, _is_query, _meta, averages, evaluate
from stm.core.tasks import PAPER_TASKS, TaskError, resolve, to_mteb
from conftest import group_config


@pytest.fixture()
def beir_folder(tmp_path, texts):
    corpus = {f"d{i}": t for i, t in enumerate(texts)}
    queries = {"q0": "covid vaccine", "q1": "heart disease", "q2": "brain tumor"}
    qrels = {"q0": {"d0": 1}, "q1": {"d2": 2, "d3": 1}, "q2": {"d5": 1}}
    return write_beir(tmp_path / "mytask", corpus, queries, qrels, "test",
                      {"name": "MyTask", "instruction": "Find the document", "group": "medical"})


def test_local_beir_folder_evaluates_through_mteb_and_records_what_moves_numbers(tiny_model, beir_folder):
    enc = Encoder(R.build(str(tiny_model), FormatConfig()), "tiny", revision="r1")
    result = evaluate(enc, [str(beir_folder)], "test", {"name": "tiny", "pooling": "lasttoken"})
    scores = result.scores["MyTask"]
    assert 0.0 <= scores["ndcg_at_10"] <= 1.0 and 0.0 <= scores["recall_at_10"] <= 1.0
    assert result.tasks["MyTask"]["instruction"] == "Find the document"
    assert len(result.tasks["MyTask"]["data_hash"]) == 16
    assert enc.instructions_seen["MyTask"] == "Find the document\nQuery: "  # the model's template, filled
    assert result.average == scores["ndcg_at_10"]


def test_a_perfect_encoder_scores_one(beir_folder):
    """The harness itself: an oracle encoder that maps each query onto its relevant document gets nDCG@10 = 1."""
    import numpy as np

    from stm.core.beir import read_beir
    data = read_beir(beir_folder)
    docs = sorted(data.corpus)
    text_to_doc = {t: d for d, t in data.corpus.items()}
    best = {data.queries[q]: max(rel, key=rel.get) for q, rel in data.qrels.items()}

    class Oracle:
        mteb_model_meta = _meta("oracle", None)
        similarity, similarity_pairwise = Encoder.similarity, Encoder.similarity_pairwise

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kw):
            texts = [t for b in inputs for t in b["text"]]
            out = np.zeros((len(texts), len(docs))) + 1e-3
            for i, t in enumerate(texts):
                out[i, docs.index(best[t] if _is_query(prompt_type) else text_to_doc[t])] = 1
            return out

    result = evaluate(Oracle(), [str(beir_folder)], "test")
    assert result.scores["MyTask"]["recall_at_10"] == 1.0
    assert result.scores["MyTask"]["ndcg_at_10"] > 0.9  # q1 has graded relevance


def test_task_registry_resolution_and_errors(tmp_path):
    spec = resolve("SciFact", None)
    assert spec.kind == "mteb" and spec.instruction == PAPER_TASKS["SciFact"][1]
    assert sum(g == "medical" for g, _, _ in PAPER_TASKS.values()) == 7
    with pytest.raises(TaskError, match="unknown task 'NotATask'"):
        resolve("NotATask", None)
    with pytest.raises(TaskError, match="not built yet"):
        resolve("pubmed-claims", tmp_path, "test")
    with pytest.raises(TaskError, match="no task folder given"):  # an embedded task is the run's: never ambient
        resolve("pubmed-claims", None, "test")


def test_mteb_task_gets_the_paper_instruction_without_download():
    task = to_mteb(resolve("TRECCOVID", None))
    assert task.metadata.prompt["query"] == "Given a query on COVID-19, retrieve documents that answer the query"


def test_averages_follow_the_paper_groups():
    scores = {"a": {"ndcg_at_10": 0.2}, "b": {"ndcg_at_10": 0.4}, "c": {"ndcg_at_10": 0.9}}
    avg = averages(scores, {"a": "medical", "b": "medical", "c": "general"})
    assert avg == {"medical": 0.3, "general": 0.9, "all": 0.5}


def test_task_metadata_is_mtebs_own_with_our_instruction(tmp_path, beir_folder):
    meta = resolve("SciFact", None).metadata()
    assert meta.name == "SciFact" and meta.prompt["query"] == PAPER_TASKS["SciFact"][1]
    local = resolve(str(beir_folder), None).metadata()
    assert local.name == "MyTask" and local.eval_splits == ["test"] and local.prompt["query"] == "Find the document"


def test_bare_backbone_is_evaluated_with_the_training_format(tiny_model, beir_folder):
    from stm.core.evaluation import score_model

    fmt = FormatConfig(pooling="mean", max_passage_tokens=40)
    r = score_model(R.build(str(tiny_model), fmt), group_config("evaluation", dtype="float32"), "bare",
                    [resolve(str(beir_folder), None)], "test")
    assert r.model["pooling"] == "mean" and r.model["document_length"] == 40
    assert r.model["prompts"]["document"] == "Represent this passage\npassage: "


def test_per_query_ndcg_averages_to_mtebs_number(tiny_model, beir_folder):
    """The per-query scores the report bootstraps are mteb's own metric, query by query (graded qrels included)."""
    enc = Encoder(R.build(str(tiny_model), FormatConfig()), "tiny")
    result = evaluate(enc, [str(beir_folder)], "test")
    per_query = result.per_query_ndcg_at_10["MyTask"]
    assert sorted(per_query) == ["q0", "q1", "q2"]
    assert abs(sum(per_query.values()) / 3 - result.scores["MyTask"]["ndcg_at_10"]) < 1e-4


def test_paired_bootstrap_verdicts():
    """Clearly better, clearly worse and equal-in-distribution models get the three verdicts."""
    import numpy as np

    from stm.figures.claims import bootstrap_mean, paired_bootstrap

    rng = np.random.default_rng(0)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 0.6, 200))}

    def rec(shift):
        return {"per_query_ndcg_at_10": {"t1": {q: v + shift for q, v in base.items()},
                                         "t2": {q: v + shift for q, v in base.items()}}}

    noisy = {"per_query_ndcg_at_10": {t: {q: v + float(rng.normal(0, 0.2)) for q, v in base.items()}
                                      for t in ("t1", "t2")}}
    assert paired_bootstrap(rec(0.05), rec(0.0))["verdict"] == "holds"
    assert paired_bootstrap(rec(0.0), rec(0.05))["verdict"] == "does not hold"
    assert paired_bootstrap(noisy, rec(0.0))["verdict"] == "inconclusive"
    assert paired_bootstrap(rec(0.0), {"scores": {}}) is None
    mean, lo, hi = bootstrap_mean(rec(0.0))
    assert lo < mean < hi


PAPER_12 = ["FeedbackQARetrieval", "MedicalQARetrieval", "CUREv1", "PublicHealthQA", "NFCorpus", "TRECCOVID", "SciFact",
            "SCIDOCS", "NanoFEVERRetrieval", "ArguAna", "NanoQuoraRetrieval", "FiQA2018"]


CURE_SPLITS = ("all", "dentistry_and_oral_health", "dermatology", "gastroenterology", "genetics",
               "neuroscience_and_neurology", "orthopedic_surgery", "otorhinolaryngology", "plastic_surgery",
               "psychiatry_and_psychology", "pulmonology")
# what mteb 2.26.24's metadata gives each paper task (eval_splits; the English subset of the multilingual ones),
# written down from the library, so a change in our lookup cannot agree with itself
MTEB_SPLITS = {name: ("test",) for name in PAPER_12} | {"NanoFEVERRetrieval": ("train",), "NanoQuoraRetrieval": ("train",),
                                                        "CUREv1": CURE_SPLITS}
MTEB_SUBSETS = {"CUREv1": ("en",), "PublicHealthQA": ("english",)}


@pytest.mark.parametrize("name", PAPER_12)
def test_each_paper_task_is_scored_on_the_splits_mteb_gives_it(name):
    """Offline: NanoFEVER and NanoQuora have only train, CUREv1's splits are disciplines (and 'all'), English only."""
    import mteb

    spec = resolve(name, None, "test")
    assert tuple(spec.splits) == MTEB_SPLITS[name]
    assert tuple(mteb.get_task(name).metadata.eval_splits) == MTEB_SPLITS[name]  # the library still says so
    assert list(to_mteb(spec).eval_splits) == list(MTEB_SPLITS[name])  # what mteb.evaluate scores
    if name in MTEB_SUBSETS:
        assert tuple(spec.subsets) == MTEB_SUBSETS[name]


@pytest.mark.parametrize("name", ["NFCorpus", "FiQA2018", "QuoraRetrieval", "DBPedia"])
def test_dev_sets_use_their_official_dev_split(name):
    spec = resolve(name, None, "dev")
    assert spec.splits == ("dev",) and list(to_mteb(spec).eval_splits) == ["dev"]  # what mteb.evaluate scores


def test_tasks_command_prints_the_paper_tasks_and_dev_sets():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "stm", "tasks", "--profile", "paper"], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 16
    assert any(line.startswith("test") and "NanoFEVERRetrieval" in line and "splits=train" in line for line in lines)
    assert any(line.startswith("dev") and "DBPedia" in line and "splits=dev" in line for line in lines)


def test_the_variant_map_is_chosen_on_dev_never_on_test(tmp_path, monkeypatch):
    """Per expert, the best dev average wins (FT on a tie), even where test says otherwise; test is only shown."""
    from conftest import evaluation

    from stm.core.records import Ablations
    from stm.figures.claims import variant_map
    from stm.paths import Layout

    layout = Layout("embedded", "b", tmp_path)
    qs = [f"q{i}" for i in range(50)]

    def rec(expert, variant, score):
        return evaluation({"t": {q: score for q in qs}}, train={"expert": expert, "variant": variant})

    cells = {  # (expert, variant): (dev, test)
        ("search", "ft"): (0.50, 0.40), ("search", "shn"): (0.55, 0.30),  # SHN wins on dev, loses on test
        ("nlu", "ft"): (0.50, 0.30), ("nlu", "po"): (0.45, 0.60),        # PO loses on dev: FT, whatever test says
        ("med_real", "ft"): (0.50, 0.3), ("med_real", "shn"): (0.50, 0.4)}  # a tie: FT
    for (expert, variant), (dev, test) in cells.items():
        rec(expert, variant, test).save(layout.ablation_results / f"variant_{variant}" / f"{expert}.json")
        rec(expert, variant, dev).save(layout.ablation_results / f"variant_{variant}" / "dev" / f"{expert}.json")
    rows = {r["expert"]: r for r in variant_map(Ablations.load(layout))}
    assert {e: r["chosen on dev"] for e, r in rows.items()} == {"search": "shn", "nlu": "ft", "med_real": "ft"}
    assert rows["search"]["chosen - FT, dev [95% CI]"].endswith("holds")
    assert rows["nlu"]["test po"] == 0.60 and rows["search"]["dev shn"] == 0.55


def test_per_query_scores_of_an_mteb_task_come_from_mteb_and_average_to_its_number(tiny_model, tmp_path):
    """CUREv1 (a stand-in with mteb's own splits and subset): every split's queries get mteb's per-query nDCG@10,
    keyed by split / subset / query, and each split's mean is mteb's score for it."""
    import mteb

    from stm.config import FormatConfig
    from stm.core import retriever as R
    from stm.core.evaluation import Encoder, capture_per_query, evaluate
    from stm.rehearsal.standins import build_tasks

    root = build_tasks(tmp_path / "tasks", ["CUREv1"], [])
    spec = resolve("CUREv1", None, "test", root)
    model = R.build(str(tiny_model), FormatConfig(max_query_tokens=16, max_passage_tokens=24), device="cpu")
    rec = evaluate(Encoder(model, "tiny"), [spec], "test")
    per_query = rec.per_query_ndcg_at_10["CUREv1"]
    assert len(spec.splits) > 1 and {k.split("/")[0] for k in per_query} == set(spec.splits)
    # mteb's own number for one split, from a second run: the mean of that split's per-query scores
    captured = {}
    task = to_mteb(spec)
    capture_per_query(task, captured)
    res = mteb.evaluate(Encoder(model, "tiny"), task, cache=None, show_progress_bar=False, overwrite_strategy="always")
    for split in spec.splits:
        mine = [v for k, v in per_query.items() if k.startswith(f"{split}/")]
        theirs = res.task_results[0].scores[split][0]["ndcg_at_10"]
        assert abs(sum(mine) / len(mine) - theirs) < 1e-4, split


def test_a_model_card_gives_the_scores_with_their_interval_and_how_to_load(tiny_model, beir_folder):
    from stm.core.cards import model_card
    from stm.core.stats import bootstrap_mean

    model = R.build(str(tiny_model), FormatConfig())
    rec = evaluate(Encoder(model, "tiny"), [str(beir_folder)], "test", R.describe(model))
    card = model_card("STM expert: nlu (ft)", rec, ["**Training**: 3 steps"], ["`splits/nlu.jsonl`"])
    mean, lo, hi = bootstrap_mean(rec)
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")
    assert f"**{mean:.3f}** [{lo:.3f}, {hi:.3f}]" in card and "over 3 queries" in card
    assert "| MyTask |" in card and 'prompt_name="MyTask"' in card and "SentenceTransformer(path)" in card
