"""The rehearsal's stand-ins: the paper's three architectures with their real tokenizer classes, built offline."""

import json
import subprocess
import sys

import pytest
import yaml
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, AutoTokenizer

from stm import config
from stm.core import retriever as R
from stm.rehearsal.standins import STANDINS, build_model

REAL = {  # what the real hub checkpoints declare (config.json model_type, tokenizer_config.json tokenizer_class)
    "qwen3-0.6b": ("qwen3", "Qwen2Tokenizer", "<|im_end|>"),
    "gemma-2b": ("gemma", "GemmaTokenizer", "<eos>"),
    "phi4-mini": ("phi3", "GPT2Tokenizer", "<|endoftext|>"),
}


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standins")
    return {name: build_model(name, root / name) for name in STANDINS}


@pytest.mark.parametrize("name", sorted(REAL))
def test_a_stand_in_has_the_paper_architecture_and_tokenizer_class(standins, name):
    folder = standins[name]
    model_type, tokenizer_class, eos = REAL[name]
    assert AutoConfig.from_pretrained(folder).model_type == model_type
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == tokenizer_class
    tok = AutoTokenizer.from_pretrained(folder)
    text = "Given a web search query, retrieve relevant passages\nQuery: what lowers cholesterol? Ünïcode"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text  # byte-level or byte fallback
    assert tok.eos_token == eos


@pytest.mark.parametrize("name", sorted(REAL))
def test_the_paper_format_embeds_a_stand_in_as_its_saved_folder_does(standins, name, tmp_path):
    """Last-token pooling, bidirectional attention, EOS appended, left padding; no chat template applied."""
    fmt = config.load("training", profile="paper", backbone="qwen3-0.6b").format.model_copy(update={"max_query_tokens": 32,
                                                                            "max_passage_tokens": 48})
    model = R.build(str(standins[name]), fmt, bidirectional=True, instructions={"t": "Given a claim"})
    feats = R.features(model, ["what lowers cholesterol", "statins"], R.QUERY, model.prompts["t"])
    tok = R.transformer(model).tokenizer
    ids = feats["input_ids"]
    assert (ids[:, -1] == tok.eos_token_id).all() and "<|im_start|>" not in tok.decode(ids[0])
    assert (feats["attention_mask"][1, 0] == 0) and (feats["attention_mask"][:, -1] == 1).all()  # left padding
    ref = R.encode(model, ["what lowers cholesterol"], R.QUERY, model.prompts["t"])
    loaded = SentenceTransformer(str(R.save(model, tmp_path / name)), device="cpu")
    torch.testing.assert_close(loaded.encode_query(["what lowers cholesterol"], prompt_name="t", convert_to_tensor=True),
                               ref, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------ the paper profile's DAG, rehearsed
@pytest.fixture(scope="module")
def rehearsal_repo(tmp_path_factory):
    """`dvc repro` of the whole DAG in the rehearsal profile: stand-ins built first, the fake endpoint serving."""
    from test_pipeline import _free_disk, _run, _smoke_run

    from stm.rehearsal.fake_openai import FakeOpenAI

    def prepare(repo, env):
        _run([sys.executable, "-m", "stm", "rehearsal", "build"], repo, env, timeout=600)

    with FakeOpenAI(port=18765) as server:
        run = _smoke_run(tmp_path_factory, "rehearsal", "rehearsal", prepare)
        calls = server.behaviour.calls
    yield run + (calls,)
    _free_disk(run[0])


@pytest.mark.slow
def test_the_paper_profile_runs_end_to_end_on_stand_ins(rehearsal_repo):
    from test_pipeline import declared

    repo, env, seconds, log, calls = rehearsal_repo
    print(f"rehearsal dvc repro: {seconds:.0f} s")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():  # every declared output exists in this profile
        body = st.get("do", st)
        items = body.get("foreach") or st.get("foreach") or [None]
        for out in [*(body.get("outs") or []), *(body.get("metrics") or [])]:
            path = next(iter(out)) if isinstance(out, dict) else out
            if "${item" in path:
                continue  # templated outputs: checked through the records below
            assert (repo / declared(path, "rehearsal")).exists(), f"stage {name}: declared output {path} missing"
    assert calls > 0  # the prompt pools came from the (fake) Llama-3.3-70B endpoint
    run = repo / "results" / "rehearsal" / "qwen3-0.6b"  # the run's results (its data's: one folder up)
    backbone = json.loads((run / "backbone.json").read_text())
    assert backbone["model"]["model"] == "data/assets/models/qwen3-0.6b" and backbone["model"]["pooling"] == "lasttoken"
    assert set(backbone["scores"]) == {"FeedbackQARetrieval", "MedicalQARetrieval", "CUREv1", "PublicHealthQA",
                                       "NFCorpus", "TRECCOVID", "SciFact", "SCIDOCS", "NanoFEVERRetrieval",
                                       "ArguAna", "NanoQuoraRetrieval", "FiQA2018"}
    assert backbone["tasks"]["NanoFEVERRetrieval"]["eval_splits"] == ["train"]
    expert = json.loads((run / "experts" / "med_real.json").read_text())
    train = expert["model"]["train"]
    assert train["variant"] == "shn_po" and train["data"]["prompts"]["optimizer"] == "gp10"  # Table 6, Qwen3
    merging = json.loads((run / "merging.json").read_text())
    assert set(merging["dev_tasks"]) == {"NFCorpus", "FiQA2018", "QuoraRetrieval", "DBPedia"}
    assert all(d["sizes"]["queries"] == 4 for d in merging["dev_tasks"].values())
    synthesis = json.loads((run.parent / "synthesis.json").read_text())
    assert synthesis["generator"].startswith("released:") and all(s["kept"] for s in synthesis["splits"].values())
    stats = json.loads((run.parent / "data_stats.json").read_text())
    assert sum(stats["split_sizes"].values()) == 141
    # the stand-in's three unreadable rows were counted and skipped, not fatal, and named where they are
    assert stats["bad_rows"]["count"] == 3 and stats["bad_rows"]["first"][0].startswith("line 142: negative: empty")
    for v in ("ft", "shn", "po", "shn_po"):  # Table 4 for every expert and FT-all
        assert {p.stem for p in (run / "ablations" / f"variant_{v}").glob("*.json")} == \
            {"med_real", "med_synth", "search", "nlu", "all"}
    for i in range(4):  # Table 10 as the paper ran it: FT-all with each GP-N pool...
        train = json.loads((run / "ablations" / f"po_{i}.json").read_text())["model"]["train"]
        assert train["expert"] == "all" and train["data"]["prompts"]["optimizer"] == f"gp{[10, 20, 50, 100][i]}"
    for budget in ("light", "medium", "heavy"):  # ...and with each GEPA budget's prompts, optimized in the cell
        train = json.loads((run / "ablations" / f"gepa_{budget}.json").read_text())["model"]["train"]
        assert train["expert"] == "all" and train["data"]["prompts"]["optimizer"] == f"gepa-{budget}"


@pytest.mark.slow
def test_the_rehearsal_scores_are_scores_and_training_moves_them(rehearsal_repo):
    """Finite nDCG@10 in [0, 1] everywhere, and a trained stand-in beats its untrained self on at least one task."""
    import math

    run = rehearsal_repo[0] / "results" / "rehearsal" / "qwen3-0.6b"
    backbone = json.loads((run / "backbone.json").read_text())
    experts = {p.stem: json.loads(p.read_text()) for p in (run / "experts").glob("*.json")}
    assert len(experts) == 5
    for rec in [backbone, *experts.values()]:
        assert all(math.isfinite(s["ndcg_at_10"]) and 0.0 <= s["ndcg_at_10"] <= 1.0 for s in rec["scores"].values())
    assert any(rec["scores"][t]["ndcg_at_10"] > backbone["scores"][t]["ndcg_at_10"]
               for rec in experts.values() for t in backbone["scores"])


@pytest.mark.slow
def test_the_paper_claims_carry_intervals_on_the_mteb_stand_ins(rehearsal_repo):
    """Per-query scores of MTEB tasks come from mteb's own hook, so the claims table has intervals, not 'not measured'."""
    from stm.core.records import MainLine
    from stm.figures.claims import main_line_claims
    from stm.paths import Layout

    run = rehearsal_repo[0] / "results" / "rehearsal" / "qwen3-0.6b"
    backbone = json.loads((run / "backbone.json").read_text())
    assert set(backbone["per_query_ndcg_at_10"]) == set(backbone["scores"])  # every MTEB stand-in, CUREv1's splits too
    rows = main_line_claims(MainLine.load(Layout("rehearsal", "qwen3-0.6b", rehearsal_repo[0])))
    measured = [r for r in rows if "ci95" in r]
    assert measured and all(r["ci95"][0] <= r["diff"] <= r["ci95"][1] for r in measured)
    assert not [r for r in rows if r["verdict"].startswith("not measured")]


@pytest.mark.slow
@pytest.mark.parametrize("backbone,optimizer", [("gemma-2b", "gepa-medium"), ("phi4-mini", "gp50")])
def test_every_backbone_preset_runs_its_main_line(rehearsal_repo, backbone, optimizer):
    """The other two presets, beside the first in the same repository: their own prompts (Gemma: GEPA; Phi-4-mini:
    GP-50), five trainings, the merge and the report, plus the GP pools every optimizer declares."""
    import re

    from test_pipeline import _run

    repo, env = rehearsal_repo[0], rehearsal_repo[1]
    params = repo / "params.yaml"
    params.write_text(re.sub(r"(?m)^backbone: \S+", f"backbone: {backbone}", params.read_text(), count=1))
    from stm.rehearsal.fake_openai import FakeOpenAI

    with FakeOpenAI(port=18765):
        _run(["dvc", "repro", "report", "prompt_pools"], repo, env)
    run = repo / "results" / "rehearsal" / backbone
    expert = json.loads((run / "experts" / "med_synth.json").read_text())
    assert expert["model"]["train"]["data"]["prompts"]["optimizer"] == optimizer
    assert expert["model"]["model"] == f"data/assets/models/{backbone}"
    methods = json.loads((run / "merging.json").read_text())["methods"]
    assert set(methods) == {"linear", "ties"}
    if backbone == "phi4-mini":  # Table 6's footnote: its Linear merge took Med-Real PO, its TIES merge Med-Real FT
        assert methods["linear"]["variants"] == {"med_real": "po"} and "variants" not in methods["ties"]
        variant = repo / "artifacts" / "rehearsal" / backbone / "experts" / "med_real" / "variants" / "po"
        assert json.loads((variant / "train_record.json").read_text())["variant"] == "po"
    assert (repo / "data" / "processed" / "rehearsal" / backbone / "prompts" / "gp.json").exists()
    assert (repo / "reports" / "rehearsal" / backbone / "05_results.html").exists()


@pytest.mark.slow
def test_data_inspect_shows_ft_data_structure_and_split_table_on_the_rehearsal(rehearsal_repo):
    repo, env = rehearsal_repo[0], rehearsal_repo[1]
    proc = subprocess.run([sys.executable, "-m", "stm", "data", "--inspect"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "line 1: {query: list[str], pos: list[str], neg: list[list[str]]}" in out
    assert "first 144 records: med_real 30, med_synth 43, search 43, nlu 25, bad 3" in out
    assert "med_real   \"Given a premise from a patient's clinical notes" in out
