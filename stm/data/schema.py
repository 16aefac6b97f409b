"""The training-triple schema shared by every profile, and its checked reader.

One JSON object per line::

    {"id": "med_real-000017",            # unique within the file
     "split": "med_real",                # med_real | med_synth | search | nlu
     "instruction": "Given a title ...", # prepended to the query as "{instruction}\\nQuery: {query}"
     "query": "...", "positive": "...", "negative": "...",
     "pos_id": "pmid:123", "neg_id": "pmid:456",
     "source": "pubmed21:title",         # where the pair came from
     "negative_source": "bm25@30"}       # how the negative was made (miner@k, or synthetic:<generator>)

Training never knows which profile produced the file.
"""

from __future__ import annotations

from pathlib import Path

from stm.io import DataError, iter_jsonl

REQUIRED = ("id", "split", "instruction", "query", "positive", "negative")
NONEMPTY = ("id", "query", "positive", "negative")


def read_triples(path: Path | str) -> list[dict]:
    """Read and check a triple file: malformed lines, missing/empty fields and duplicate ids name file:line."""
    path = Path(path)
    rows, seen = [], {}
    for lineno, row in enumerate(iter_jsonl(path, REQUIRED, NONEMPTY), 1):
        if row["id"] in seen:
            raise DataError(f"{path}: duplicate id {row['id']!r} (rows {seen[row['id']]} and {lineno})")
        seen[row["id"]] = lineno
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no triples (empty split)")
    return rows
