import json
import re

import pytest

from stm.data import bmretriever
from stm.data.schema import read_triples
from stm.synthesis import shn
from stm.io import DataError
from conftest import group_config

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
    stats_file = tmp_path / "results" / "data_stats.json"
    stats = bmretriever.run(group_config("data", source="bmretriever", bmretriever_path=str(src), dev_rows=0,
                                       split_tolerance=None), tmp_path / "processed", stats_file)
    assert stats["split_sizes"] == {"med_real": 3, "med_synth": 3, "search": 3, "nlu": 3}
    rows = read_triples(tmp_path / "processed" / "splits" / "search.jsonl")
    assert rows[0]["instruction"].startswith("Given a web search query") and rows[0]["query"] == "what is a statin"
    assert not (tmp_path / "processed" / "synthesis").exists()  # the synthesis stage's output, not the data stage's

    # the synthesis stage joins the released negatives by BMRetriever row (one row has none released)
    negs = tmp_path / "negs.jsonl"
    negs.write_text("\n".join(json.dumps({"bmretriever_index": i, "hard_negative": f"synthetic {i}"}) for i in range(11)))
    report = shn.run(group_config("synthesis", splits=["nlu", "search"], released=str(negs)), tmp_path / "processed",
                     tmp_path / "synthesis.json")
    out = read_triples(tmp_path / "processed" / "synthesis" / "shn" / "nlu.jsonl")
    assert all(r["negative"] == f"synthetic {r['bmretriever_index']}" and r["mined_negative"] == "A cat sleeps."
               for r in out if r["bmretriever_index"] != 11)
    assert sum(s["kept"] for s in report["splits"].values()) == 6 - sum(
        r["bmretriever_index"] == 11 for r in read_triples(tmp_path / "processed" / "splits" / "search.jsonl")
        + read_triples(tmp_path / "processed" / "splits" / "nlu.jsonl"))


def test_missing_fields_are_listed(tmp_path):
    with pytest.raises(bmretriever.BadRow, match=r"none of the fields \['pos', 'positive', 'positives'\] found; row has \['neg', 'query'\]"):
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
    stats_file = tmp_path / "results" / "data_stats.json"
    paper = {"med_synth": 431, "med_real": 306, "search": 438, "nlu": 251}  # Table 2 in thousands
    ok = group_config("data", source="bmretriever", bmretriever_path=str(_write_rows(tmp_path, paper)), dev_rows=0)
    assert bmretriever.run(ok, tmp_path / "p1", stats_file)["split_sizes"] == paper
    table = [("web search query", "nlu"), *bmretriever.INSTRUCTION_TABLE]  # MS MARCO moved into NLU
    moved = ok.model_copy(update={"split_patterns": table})
    with pytest.raises(DataError, match=r"does not reproduce Table 2 within 2%: .*search: 0 rows.*"
                                        r"nlu: 689 rows, 48.3% of 1426 \(Table 2: 251000, 17.6%"):
        bmretriever.run(moved, tmp_path / "p2", stats_file)
    stats = json.loads((tmp_path / "results" / "data_stats.json").read_text())  # written before the error
    assert {"instruction": ROWS[0]["query"][0], "split": "nlu", "rows": 438} in stats["instruction_counts"]
    assert (tmp_path / "p1" / "tasks" / "hub.json").exists()  # the declared output exists in this profile too


@pytest.mark.parametrize("value,text", [
    ("a passage", "a passage"),                                        # a string
    (["first", "second"], "first"),                                     # a list of strings: the first
    ([["", "the text"], ["", "another"]], "the text"),                  # E5-style [instruction, text] pairs
    ([{"title": "T", "text": "body"}], "T body"),                       # mappings with a text field
    ({"contents": "body"}, "body"),
])
def test_ft_data_positives_in_every_plausible_schema_become_their_text(value, text):
    row = bmretriever.normalize_row({"query": ["an instruction", "q"], "pos": value, "neg": value}, 0, "f")
    assert row == {"instruction": "an instruction", "query": "q", "positive": text, "negative": text}


@pytest.mark.parametrize("row,reason", [
    ({"query": "q", "pos": ["p"], "neg": [""]}, "negative: empty"),
    ({"query": "q", "pos": [], "neg": ["n"]}, "positive: an empty list"),
    ({"query": ["i", 3], "pos": ["p"], "neg": ["n"]}, "query: not text (list)"),
    ({"query": "q", "pos": [{"id": 1}], "neg": ["n"]}, "positive: a mapping without a text field"),
    ({"query": "q", "pos": ["p"], "neg": 5}, "negative: not text (int)"),
])
def test_ft_data_rows_that_are_not_triples_are_bad_rows_naming_the_field(row, reason):
    with pytest.raises(bmretriever.BadRow, match=re.escape(reason)):
        bmretriever.normalize_row(row, 0, "f")


def test_ft_data_json_array_streams_like_json_lines(tmp_path):
    """A JSON array (read in 1 MB pieces, so an element crosses a piece's end) gives the same records as JSON Lines."""
    recs = [{"query": ["ins", f"q{i}"], "pos": ["p" * 700], "neg": [f"n{i}"]} for i in range(3000)]  # ~2.2 MB
    (tmp_path / "a.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n")
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    arr = [r for _, r in bmretriever.iter_json_records(tmp_path / "a.json")]
    lines = [r for _, r in bmretriever.iter_json_records(tmp_path / "l.jsonl")]
    assert arr == lines == recs
    (tmp_path / "b.json").write_text('[{"query": "q"}, {"query": ')
    with pytest.raises(DataError, match=r"b.json: element 2: not valid JSON"):
        list(bmretriever.iter_json_records(tmp_path / "b.json"))
    (tmp_path / "c.json").write_text('[{"query": "q"}, ')
    with pytest.raises(DataError, match=r"c.json: the JSON array is not closed \(after element 1\)"):
        list(bmretriever.iter_json_records(tmp_path / "c.json"))


def test_ft_data_bad_rows_are_counted_and_skipped_up_to_the_cap(tmp_path, monkeypatch):
    stats_file = tmp_path / "results" / "data_stats.json"
    good = [json.dumps(r) for r in ROWS]
    src = tmp_path / "ft_data.json"
    src.write_text("\n".join(good[:6] + ['{"query": "q", "pos": ["p"], "neg": [""]}', "{oops"] + good[6:]) + "\n")
    cfg = group_config("data", source="bmretriever", bmretriever_path=str(src), dev_rows=0, split_tolerance=None)
    stats = bmretriever.run(cfg, tmp_path / "processed", stats_file)
    assert sum(stats["split_sizes"].values()) == len(ROWS)
    assert stats["bad_rows"]["count"] == 2 and stats["bad_rows"]["reasons"] == {"negative: empty": 1,
                                                                               "not valid JSON": 1}
    assert stats["bad_rows"]["first"][0] == "line 7: negative: empty"
    # row indices stay the records' positions, so the released negatives still join by bmretriever_index
    ids = sorted(r["bmretriever_index"] for s in ("search", "nlu", "med_real", "med_synth")
                 for r in read_triples(tmp_path / "processed" / "splits" / f"{s}.jsonl"))
    assert ids == [i for i in range(len(ROWS) + 2) if i not in (6, 7)]
    with pytest.raises(DataError, match=r"more than 1 rows cannot be read .*data.max_bad_rows.*line 7: negative: empty"):
        bmretriever.run(cfg.model_copy(update={"max_bad_rows": 1}), tmp_path / "p2", stats_file)


@pytest.mark.parametrize("instruction,split", [
    # written from the datasets' descriptions (BMRetriever's paper lists MedNLI and Medical Question Pairs among its
    # medical fine-tuning sets), not from our rules
    ("Given a premise from the medical history of a patient, retrieve a hypothesis it entails", "med_real"),  # MedNLI
    ("Given a clinical sentence, retrieve hypotheses that follow from it", "med_real"),                         # MedNLI
    ("Given a medical question, retrieve questions that are semantically equivalent", "med_real"),            # MQP
    ("Given a question asked by a patient, retrieve the answer of a doctor", "med_real"),                     # dialogues
    ("Given a question, retrieve questions that are semantically equivalent to the given question", "nlu"),  # Quora
    ("Given a premise, retrieve a hypothesis that is entailed by the premise", "nlu"),                        # SNLI
    ("Given an online product review, retrieve similar reviews", "med_synth"),      # "nli" inside "online"
    ("Given a query about biomedical research, find relevant articles", "med_synth"),  # "medical" inside a word
])
def test_ft_data_instruction_rules_match_whole_words_and_keep_medical_sets_in_med_real(instruction, split):
    assert bmretriever.assign_split(instruction) == split
