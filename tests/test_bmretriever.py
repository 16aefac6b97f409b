import json

import pytest

from stm.config import DataConfig, SynthesisConfig
from stm.data import bmretriever
from stm.data.schema import read_triples
from stm.synthesis import shn
from stm.io import DataError

ROWS = [
    {"query": ["Given a web search query, retrieve relevant passages that answer the query", "what is a statin"],
     "pos": ["Statins lower cholesterol."], "neg": ["Aspirin thins blood."]},
    {"query": ["Given a premise, retrieve a hypothesis that is entailed by the premise", "A man runs."],
     "pos": ["A person moves."], "neg": ["A cat sleeps."]},
    {"query": ["Given a medical question, retrieve answers from doctors", "my knee hurts"],
     "pos": ["Rest and ice."], "neg": ["Take vitamins."]},
    {"query": ["Given a query, find articles that discuss the correlation between a specific lifestyle factor and a disease", "smoking cancer"],
     "pos": ["Smoking causes lung cancer."], "neg": ["Coffee and sleep."]},
] * 3


def test_stand_in_ft_data_is_split_and_written_in_the_triple_schema(tmp_path, monkeypatch):
    src = tmp_path / "ft_data.json"
    src.write_text("\n".join(json.dumps(r) for r in ROWS))
    monkeypatch.setattr(bmretriever.paths, "PROFILE_RESULTS", tmp_path / "results")
    stats = bmretriever.run(DataConfig(source="bmretriever", bmretriever_path=str(src), dev_rows=0,
                                       split_tolerance=None), tmp_path / "processed")
    assert stats["split_sizes"] == {"med_real": 3, "med_synth": 3, "search": 3, "nlu": 3}
    rows = read_triples(tmp_path / "processed" / "splits" / "search.jsonl")
    assert rows[0]["instruction"].startswith("Given a web search query") and rows[0]["query"] == "what is a statin"
    assert not (tmp_path / "processed" / "synthesis").exists()  # the synthesis stage's output, not the data stage's

    # the synthesis stage joins the released negatives by BMRetriever row (one row has none released)
    negs = tmp_path / "negs.jsonl"
    negs.write_text("\n".join(json.dumps({"bmretriever_index": i, "hard_negative": f"synthetic {i}"}) for i in range(11)))
    report = shn.run(SynthesisConfig(splits=["nlu", "search"], released=str(negs)), tmp_path / "processed",
                     tmp_path / "synthesis.json")
    out = read_triples(tmp_path / "processed" / "synthesis" / "shn" / "nlu.jsonl")
    assert all(r["negative"] == f"synthetic {r['bmretriever_index']}" and r["mined_negative"] == "A cat sleeps."
               for r in out if r["bmretriever_index"] != 11)
    assert sum(s["kept"] for s in report["splits"].values()) == 6 - sum(
        r["bmretriever_index"] == 11 for r in read_triples(tmp_path / "processed" / "splits" / "search.jsonl")
        + read_triples(tmp_path / "processed" / "splits" / "nlu.jsonl"))


def test_missing_fields_are_listed(tmp_path):
    with pytest.raises(DataError, match=r"row 0: none of the fields \['pos', 'positive', 'positives'\] found; row has \['neg', 'query'\]"):
        bmretriever.normalize_row({"query": "q", "neg": "n"}, 0, "ft_data.json")


@pytest.mark.parametrize("instruction,split", [
    ("Given a web search query, retrieve relevant passages that answer the query", "search"),      # MS MARCO
    ("Given a question, retrieve Wikipedia passages that answer the question", "nlu"),            # NQ
    ("Given the following question from Reddit ELI5, retrieve the best answer", "nlu"),          # ELI5
    ("Given a claim, retrieve documents that support or refute the claim", "nlu"),               # FEVER
    ("Given a premise, retrieve a hypothesis that is entailed by the premise", "nlu"),           # SNLI
    ("Given a medical question, retrieve answers from doctors", "med_real"),
    ("Given a query, find articles that discuss the correlation between diet and disease", "med_synth"),
])
def test_the_paper_names_nq_fever_eli5_snli_as_nlu_and_ms_marco_as_search(instruction, split):
    assert bmretriever.assign_split(instruction) == split


def _write_rows(tmp_path, counts):
    by_split = {"search": ROWS[0], "nlu": ROWS[1], "med_real": ROWS[2], "med_synth": ROWS[3]}
    src = tmp_path / "ft_data.json"
    src.write_text("\n".join(json.dumps(by_split[s]) for s, n in counts.items() for _ in range(n)))
    return src


def test_split_sizes_are_checked_against_table_2(tmp_path, monkeypatch):
    """Shares within 2% of Table 2's pass; a mapping that moves a dataset fails naming every count."""
    monkeypatch.setattr(bmretriever.paths, "PROFILE_RESULTS", tmp_path / "results")
    paper = {"med_synth": 431, "med_real": 306, "search": 438, "nlu": 251}  # Table 2 in thousands
    ok = DataConfig(source="bmretriever", bmretriever_path=str(_write_rows(tmp_path, paper)), dev_rows=0)
    assert bmretriever.run(ok, tmp_path / "p1")["split_sizes"] == paper
    table = [("web search query", "nlu"), *bmretriever.INSTRUCTION_TABLE[1:]]  # MS MARCO moved into NLU
    moved = ok.model_copy(update={"split_patterns": table})
    with pytest.raises(DataError, match=r"does not reproduce Table 2 within 2%: .*search: 0 rows.*"
                                        r"nlu: 689 rows, 48.3% of 1426 \(Table 2: 251000, 17.6%"):
        bmretriever.run(moved, tmp_path / "p2")
    stats = json.loads((tmp_path / "results" / "data_stats.json").read_text())  # written before the error
    assert {"instruction": ROWS[0]["query"][0], "split": "nlu", "rows": 438} in stats["instruction_counts"]
    assert (tmp_path / "p1" / "tasks" / "hub.json").exists()  # the declared output exists in this profile too
