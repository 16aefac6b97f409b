"""Paper-scale training data: the BMRetriever fine-tuning set, split into the paper's four subsets.

``BMRetriever/biomed_retrieval_dataset`` (file ``ft_data.json``, about 1.43M rows) is loaded through
``datasets`` (from the hub, or from a local copy given as ``data.bmretriever_path``). Its exact schema
cannot be seen offline, so the loader accepts the common spellings, checks the fields it needs, and
fails listing the fields it found. Each row is assigned to a split by its instruction string using
the table below; the loader prints its counts next to the paper's (Table 2).
Rows are written in the same triple JSONL as the embedded splits, so training never knows which
profile produced them. The authors' released synthetic negatives (``bmretriever_index``,
``hard_negative``) can be joined by row index; they become the SHN files.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path

from stm import paths
from stm.config import SPLIT_NAMES, DataConfig
from stm.io import DataError, write_json, write_jsonl

log = logging.getLogger(__name__)

PAPER_SIZES = {"med_synth": 431_000, "med_real": 306_000, "search": 438_000, "nlu": 251_000}

# (pattern on the lower-cased instruction, split). First match wins; unmatched rows are Med-Synth, whose
# instructions are LLM-written and varied (paper digest 3.2: "Given a query, find articles that ...").
# The paper names the general-domain data "NLU benchmarks such as Natural Questions, FEVER, ELI5, SNLI, and the MS
# MARCO passage ranking dataset", and the authors' release calls the NLU expert "general-qa" and the Search expert
# "general-ir": MS MARCO is Search, the QA / NLI / fact-checking sets are NLU. The counts this gives are checked
# against Table 2 (``check_split_sizes``); ``data.split_patterns`` replaces this table without touching code.
INSTRUCTION_TABLE: list[tuple[str, str]] = [
    (r"web search query", "search"),                                   # MS MARCO passage / doc
    (r"wikipedia passages that answer", "nlu"),                        # Natural Questions, SQuAD
    (r"retrieve relevant passages that answer the question", "nlu"),   # GooAQ-style QA
    (r"multi-hop question", "nlu"),                                    # HotpotQA
    (r"reddit eli5", "nlu"),                                           # ELI5
    (r"premise, retrieve a hypothesis", "nlu"),                        # SNLI / MNLI
    (r"claim, retrieve documents that support or refute", "nlu"),      # FEVER
    (r"semantically equivalent", "nlu"),                               # Quora duplicates
    (r"medical|patient|clinical|doctor|health|nli|stackexchange", "med_real"),  # MedNLI, MQP, MEDIQA, dialogues
]


QUERY_KEYS, POS_KEYS, NEG_KEYS = ("query", "anchor", "question"), ("pos", "positive", "positives"), ("neg", "negative", "negatives")


def assign_split(instruction: str, table: list[tuple[str, str]] | None = None) -> str:
    low = instruction.lower()
    for pattern, split in table or INSTRUCTION_TABLE:
        if re.search(pattern, low):
            return split
    return "med_synth"


def check_split_sizes(counts: dict[str, int], tolerance: float, source: str) -> None:
    """Each split's share of the rows must match Table 2's within ``tolerance`` (relative), else a named error.

    Shares rather than counts, so a stand-in built in the paper's proportions passes the same check."""
    total, paper_total = sum(counts.values()), sum(PAPER_SIZES.values())
    rel = {s: (counts[s] / max(1, total)) / (PAPER_SIZES[s] / paper_total) - 1 for s in SPLIT_NAMES}
    bad = [s for s in SPLIT_NAMES if abs(rel[s]) > tolerance]
    if bad:
        detail = "; ".join(f"{s}: {counts[s]} rows, {counts[s] / max(1, total):.1%} of {total} (Table 2: "
                           f"{PAPER_SIZES[s]}, {PAPER_SIZES[s] / paper_total:.1%}; off by {rel[s]:+.1%})" for s in bad)
        raise DataError(f"{source}: the instruction-to-split mapping does not reproduce Table 2 within "
                        f"{tolerance:.0%}: {detail}. The rows per instruction are in "
                        f"{paths.PROFILE_RESULTS / 'data_stats.json'} "
                        "(instruction_counts); fix data.split_patterns")


def _first(value):
    if isinstance(value, list):
        return value[0] if value else ""
    return value


def normalize_row(row: dict, index: int, source: str) -> dict:
    """One ft_data.json row -> (instruction, query, positive, negative); a missing field lists those found."""
    def pick(keys):
        for k in keys:
            if k in row:
                return row[k]
        raise DataError(f"{source}: row {index}: none of the fields {list(keys)} found; row has {sorted(row)}")

    query = pick(QUERY_KEYS)
    instruction = row.get("instruction") or row.get("task") or ""
    if isinstance(query, list) and len(query) == 2 and not instruction:
        instruction, query = query  # [instruction, query] pairs, as in BMRetriever's training format
    pos, neg = _first(pick(POS_KEYS)), _first(pick(NEG_KEYS))
    if not str(query).strip() or not str(pos).strip() or not str(neg).strip():
        raise DataError(f"{source}: row {index}: empty query, positive or negative")
    return {"instruction": str(instruction), "query": str(query), "positive": str(pos), "negative": str(neg)}


def load_rows(cfg: DataConfig):
    import datasets

    if cfg.bmretriever_path:
        ds = datasets.load_dataset("json", data_files=cfg.bmretriever_path, split="train")
        source = cfg.bmretriever_path
    else:
        ds = datasets.load_dataset("BMRetriever/biomed_retrieval_dataset", data_files="ft_data.json", split="train")
        source = "BMRetriever/biomed_retrieval_dataset:ft_data.json"
    return ds, source


def load_negatives(ref: str) -> dict[int, str]:
    import datasets

    path = Path(ref)
    if path.exists():
        kind = "parquet" if path.suffix == ".parquet" else "json"
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    else:
        ds = datasets.load_dataset(ref, split="train")
    missing = {"bmretriever_index", "hard_negative"} - set(ds.column_names)
    if missing:
        raise DataError(f"{ref}: missing column(s) {sorted(missing)}; found {ds.column_names}")
    return {int(i): n for i, n in zip(ds["bmretriever_index"], ds["hard_negative"], strict=True)}


def run(cfg: DataConfig, out: Path | None = None) -> dict:
    out = Path(out or paths.PROCESSED)
    ds, source = load_rows(cfg)
    rows: dict[str, list[dict]] = {s: [] for s in SPLIT_NAMES}
    table = [tuple(p) for p in cfg.split_patterns] if cfg.split_patterns else INSTRUCTION_TABLE
    by_instruction: Counter = Counter()
    for i, raw in enumerate(ds):
        r = normalize_row(raw, i, source)
        split = assign_split(r["instruction"], table)
        by_instruction[(r["instruction"], split)] += 1
        rows[split].append(r | {"id": f"{split}-{i:07d}", "split": split, "pos_id": "", "neg_id": "",
                                "source": f"bmretriever:{i}", "negative_source": "bmretriever:e5-top100",
                                "bmretriever_index": i})
    rng = random.Random(cfg.seed)
    counts = {}
    for split, split_rows in rows.items():
        rng.shuffle(split_rows)
        n_dev = min(cfg.dev_rows, len(split_rows) // 5)
        write_jsonl(out / "splits_dev" / f"{split}.jsonl", split_rows[:n_dev])
        rows[split] = split_rows[n_dev:]
        write_jsonl(out / "splits" / f"{split}.jsonl", rows[split])
        counts[split] = len(split_rows)
        log.info("%-10s %8d rows (paper: %d)", split, len(split_rows), PAPER_SIZES[split])
    write_jsonl(out / "splits" / "all.jsonl", (r for s in SPLIT_NAMES for r in rows[s]))
    (out / "tasks").mkdir(parents=True, exist_ok=True)  # the paper's tasks are mteb's, read from the hub
    write_json(out / "tasks" / "hub.json", {"note": "paper profile: evaluation tasks are loaded by mteb from the hub"})
    stats = {"source": source, "split_sizes": counts, "paper_split_sizes": PAPER_SIZES, "seed": cfg.seed,
             "instruction_table": table, "tasks": {},
             # every matched instruction with its rows; Med-Synth's many LLM-written ones: the 20 most frequent
             "instruction_counts": [{"instruction": ins, "split": sp, "rows": n} for (ins, sp), n in
                                    by_instruction.most_common() if sp != "med_synth"]
             + [{"instruction": ins, "split": sp, "rows": n} for (ins, sp), n in
                by_instruction.most_common() if sp == "med_synth"][:20]}
    write_json(paths.PROFILE_RESULTS / "data_stats.json", stats)  # written first: the check below points the user at it
    if cfg.split_tolerance is not None:
        check_split_sizes(counts, cfg.split_tolerance, source)
    return stats
