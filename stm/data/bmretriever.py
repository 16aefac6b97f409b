"""Paper-scale training data: the BMRetriever fine-tuning set, split into the paper's four subsets.

``BMRetriever/biomed_retrieval_dataset`` (file ``ft_data.json``, about 1.43M rows) is downloaded once from the hub,
or read from a local copy given as ``data.bmretriever_path``, and streamed (JSON Lines or a JSON array), never held in
memory. Its exact schema cannot be seen offline, so the loader accepts the common spellings (``as_text``), and counts
the rows it cannot read, with their reasons, up to ``data.max_bad_rows``, instead of stopping at the first one. Each
row is assigned to a split by its instruction string (the table below); the counts are checked against Table 2.
``python -m stm data --inspect`` shows the first rows' structure and the split table in seconds.
Rows are written in the same triple JSONL as the embedded splits, so training never knows which
profile produced them. The authors' released synthetic negatives (``bmretriever_index``,
``hard_negative``) can be joined by row index; they become the SHN files.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from pathlib import Path

from stm.config import SPLIT_NAMES, DataConfig
from stm.io import DataError, write_json, write_jsonl

log = logging.getLogger(__name__)

PAPER_SIZES = {"med_synth": 431_000, "med_real": 306_000, "search": 438_000, "nlu": 251_000}

# (pattern on the lower-cased instruction, split). First match wins; unmatched rows are Med-Synth, whose
# instructions are LLM-written and varied (paper digest 3.2: "Given a query, find articles that ...").
# The paper names the general-domain data "NLU benchmarks such as Natural Questions, FEVER, ELI5, SNLI, and the MS
# MARCO passage ranking dataset", and the authors' release calls the NLU expert "general-qa" and the Search expert
# "general-ir": MS MARCO is Search, the QA / NLI / fact-checking sets are NLU. The medical rule comes first and every
# rule matches whole words, so a clinical NLI set (MedNLI: "premise ... hypothesis") or Medical Question Pairs
# ("semantically equivalent") stays in Med-Real, and "nli" no longer matches "online". The counts this gives are
# checked against Table 2 (``check_split_sizes``); ``data.split_patterns`` replaces this table without touching code.
INSTRUCTION_TABLE: list[tuple[str, str]] = [
    (r"\b(medical|medicine|patients?|clinical|clinicians?|doctors?|physicians?|health|mednli|nurses?)\b", "med_real"),
    (r"\bweb search query\b", "search"),                                   # MS MARCO passage / doc
    (r"\bwikipedia passages that answer\b", "nlu"),                        # Natural Questions, SQuAD
    (r"\bretrieve relevant passages that answer the question\b", "nlu"),   # GooAQ-style QA
    (r"\bmulti-hop question\b", "nlu"),                                    # HotpotQA
    (r"\breddit eli5\b", "nlu"),                                           # ELI5
    (r"\bpremise\b.*\bhypothesis\b", "nlu"),                                # SNLI / MNLI
    (r"\bclaim, retrieve documents that support or refute\b", "nlu"),      # FEVER
    (r"\bsemantically equivalent\b", "nlu"),                               # Quora duplicates
    (r"\bstackexchange\b", "med_real"),                                    # health and biology forums
]

QUERY_KEYS, POS_KEYS, NEG_KEYS = ("query", "anchor", "question"), ("pos", "positive", "positives"), ("neg", "negative", "negatives")
TEXT_KEYS = ("text", "contents", "content", "passage", "document")


class BadRow(ValueError):
    """One row that cannot be read as a triple: counted and reported (up to ``data.max_bad_rows``), not fatal."""


def assign_split(instruction: str, table: list[tuple[str, str]] | None = None) -> str:
    low = instruction.lower()
    for pattern, split in table or INSTRUCTION_TABLE:
        if re.search(pattern, low):
            return split
    return "med_synth"


def check_split_sizes(counts: dict[str, int], tolerance: float, source: str, stats: Path | str = "data_stats.json") -> None:
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
                        f"{stats} "
                        "(instruction_counts); fix data.split_patterns")


def as_text(value, field: str) -> str:
    """A positive or negative in any of the schemas seen in retrieval training sets, as one string: a string; a list
    of them (the first); a list of ``[instruction, text]`` pairs (the first pair's text: E5-style ``["", text]``); a
    mapping with a text field (a ``title`` is put in front). Anything else is a :class:`BadRow`."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        key = next((k for k in TEXT_KEYS if isinstance(value.get(k), str)), None)
        if key is None:
            raise BadRow(f"{field}: a mapping without a text field ({sorted(value)}; expected one of {list(TEXT_KEYS)})")
        title = value.get("title")
        text = f"{title} {value[key]}" if isinstance(title, str) and title.strip() else value[key]
    elif isinstance(value, (list, tuple)):
        if not value:
            raise BadRow(f"{field}: an empty list")
        first = value[0]
        if isinstance(first, (list, tuple)) and len(first) == 2 and all(isinstance(x, str) for x in first):
            text = first[1]  # [instruction, text]
        else:
            return as_text(first, field)
    else:
        raise BadRow(f"{field}: not text ({type(value).__name__})")
    if not text.strip():
        raise BadRow(f"{field}: empty")
    return text


def normalize_row(row, index: int, source: str) -> dict:
    """One ft_data.json row -> (instruction, query, positive, negative). The query is a string or an
    ``[instruction, query]`` pair (BMRetriever's training format), with an optional ``instruction`` or ``task`` field;
    a row that cannot be read raises :class:`BadRow` naming the field."""
    if not isinstance(row, dict):
        raise BadRow(f"not a JSON object ({type(row).__name__})")

    def pick(keys):
        for k in keys:
            if k in row:
                return row[k]
        raise BadRow(f"none of the fields {list(keys)} found; row has {sorted(row)}")

    query = pick(QUERY_KEYS)
    instruction = row.get("instruction") or row.get("task") or ""
    if isinstance(query, (list, tuple)) and len(query) == 2 and all(isinstance(x, str) for x in query):
        instruction, query = (instruction or query[0]), query[1]
    if not isinstance(query, str) or not query.strip():
        raise BadRow(f"query: {'empty' if isinstance(query, str) else f'not text ({type(query).__name__})'}")
    if not isinstance(instruction, str):
        raise BadRow(f"instruction: not text ({type(instruction).__name__})")
    return {"instruction": instruction, "query": query, "positive": as_text(pick(POS_KEYS), "positive"),
            "negative": as_text(pick(NEG_KEYS), "negative")}


def iter_json_records(path: Path):
    """``(where, record or error)`` for each record of a JSON Lines file or a JSON array, streamed: a 5 GB
    ``ft_data.json`` is never held in memory. ``where`` is ``line N`` (JSON Lines) or ``element N`` (an array)."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        head = f.read(4096)
        if head.lstrip().startswith("["):
            buf, pos, n, done = head, head.index("[") + 1, 0, False
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buf) and buf[pos] == "]":
                    return
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as e:
                    more = "" if done else f.read(1 << 20)
                    if more:
                        buf, pos = buf[pos:] + more, 0
                        continue
                    if pos >= len(buf):
                        raise DataError(f"{path}: the JSON array is not closed (after element {n})") from None
                    raise DataError(f"{path}: element {n + 1}: not valid JSON ({e.msg}); an array cannot be read "
                                    "past a broken element") from None
                n += 1
                yield f"element {n}", obj
                pos = end
                if pos > 1 << 20:  # drop what has been read
                    buf, pos = buf[pos:], 0
        else:
            f.seek(0)
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"line {lineno}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"line {lineno}", BadRow(f"not valid JSON ({e.msg})")


def ft_data_path(cfg: DataConfig) -> tuple[Path, str]:
    """The local ``ft_data.json``: ``data.bmretriever_path``, or the hub file downloaded once into the cache."""
    if cfg.bmretriever_path:
        path = Path(cfg.bmretriever_path)
        if not path.is_file():
            raise DataError(f"{path}: no such file (data.bmretriever_path)")
        return path, cfg.bmretriever_path
    from huggingface_hub import hf_hub_download

    repo = "BMRetriever/biomed_retrieval_dataset"
    return Path(hf_hub_download(repo, "ft_data.json", repo_type="dataset")), f"{repo}:ft_data.json"


def read_rows(cfg: DataConfig, limit: int | None = None):
    """``(index, row or BadRow)`` for each record of ``ft_data.json``, normalized (index: the record's position,
    the ``bmretriever_index`` the released negatives are joined by); ``limit``: the first records only."""
    path, source = ft_data_path(cfg)
    for i, (where, rec) in enumerate(iter_json_records(path)):
        if limit is not None and i >= limit:
            return
        if isinstance(rec, BadRow):
            yield i, where, rec
            continue
        try:
            yield i, where, normalize_row(rec, i, source)
        except BadRow as e:
            yield i, where, e


def structure(value, depth: int = 0) -> str:
    """A JSON value's shape: ``list[list[str, str]]``, ``{query: str, pos: list[str]}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {structure(v, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(dict.fromkeys(structure(v, depth + 1) for v in value[:3]))
        return f"list[{inner}]" if value else "list[]"
    return type(value).__name__


def inspect(cfg: DataConfig, rows: int = 20_000, show: int = 3) -> str:
    """What ``python -m stm data --inspect`` prints, in seconds: the first records' structure, and the
    instruction -> split table with counts over the first ``rows`` records, before any long work."""
    path, source = ft_data_path(cfg)
    table = [tuple(p) for p in cfg.split_patterns] if cfg.split_patterns else INSTRUCTION_TABLE
    lines = [f"{source}"]
    for n, (where, rec) in enumerate(iter_json_records(path)):
        if n >= show:
            break
        lines.append(f"  {where}: {structure(rec) if not isinstance(rec, BadRow) else 'bad: ' + str(rec)}")
    by: Counter = Counter()
    bad: Counter = Counter()
    seen = 0
    for _, _, r in read_rows(cfg, limit=rows):
        seen += 1
        if isinstance(r, BadRow):
            bad[str(r)] += 1
        else:
            by[(r["instruction"], assign_split(r["instruction"], table))] += 1
    splits = Counter()
    for (_, split), k in by.items():
        splits[split] += k
    lines.append(f"first {seen} records: " + ", ".join(f"{s} {splits[s]}" for s in SPLIT_NAMES)
                 + f", bad {sum(bad.values())}")
    lines.append("  rows  split      instruction")
    for (ins, split), k in by.most_common(40):
        lines.append(f"  {k:>5}  {split:<10} {ins[:100]!r}")
    for reason, k in bad.most_common(10):
        lines.append(f"  {k:>5}  bad        {reason}")
    return "\n".join(lines)


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


def run(cfg: DataConfig, out: Path, stats_file: Path) -> dict:
    """The paper's triples into ``out/splits{,_dev}``, the split table and counts into ``stats_file``."""
    out = Path(out)
    source = ft_data_path(cfg)[1]
    rows: dict[str, list[dict]] = {s: [] for s in SPLIT_NAMES}
    table = [tuple(p) for p in cfg.split_patterns] if cfg.split_patterns else INSTRUCTION_TABLE
    by_instruction: Counter = Counter()
    bad: Counter = Counter()
    examples: list[str] = []
    for i, where, r in read_rows(cfg):
        if isinstance(r, BadRow):  # counted and reported; too many stop the stage, naming the first ones
            bad[str(r).split(" (")[0]] += 1
            if len(examples) < 10:
                examples.append(f"{where}: {r}")
            if sum(bad.values()) > cfg.max_bad_rows:
                raise DataError(f"{source}: more than {cfg.max_bad_rows} rows cannot be read as triples "
                                f"(data.max_bad_rows); the first: {'; '.join(examples[:3])}")
            continue
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
             "bad_rows": {"count": sum(bad.values()), "reasons": dict(bad.most_common()), "first": examples},
             # every matched instruction with its rows; Med-Synth's many LLM-written ones: the 20 most frequent
             "instruction_counts": [{"instruction": ins, "split": sp, "rows": n} for (ins, sp), n in
                                    by_instruction.most_common() if sp != "med_synth"]
             + [{"instruction": ins, "split": sp, "rows": n} for (ins, sp), n in
                by_instruction.most_common() if sp == "med_synth"][:20]}
    write_json(stats_file, stats)  # written first: the check below points the user at it
    if cfg.split_tolerance is not None:
        check_split_sizes(counts, cfg.split_tolerance, source, stats_file)
    return stats
