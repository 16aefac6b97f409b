"""Read and write BEIR-format folders: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from stm.io import DataError, atomic_path, iter_jsonl, read_json, write_json, write_jsonl


@dataclass
class BeirData:
    corpus: dict[str, str]  # id -> text ("title. text" when a title exists)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def write_beir(folder: Path, corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
               split: str, meta: dict | None = None) -> Path:
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        write_jsonl(tmp / "corpus.jsonl", ({"_id": k, "title": "", "text": v} for k, v in corpus.items()))
        write_jsonl(tmp / "queries.jsonl", ({"_id": k, "text": v} for k, v in queries.items()))
        (tmp / "qrels").mkdir()
        with (tmp / "qrels" / f"{split}.tsv").open("w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for q, docs in qrels.items():
                for d, s in docs.items():
                    f.write(f"{q}\t{d}\t{s}\n")
        if meta is not None:
            write_json(tmp / "task.json", meta)
    return folder


def read_beir(folder: Path | str, split: str = "test") -> BeirData:
    """Load a BEIR folder; unknown qrel ids, duplicates and empty texts name the file and line."""
    folder = Path(folder)
    corpus: dict[str, str] = {}
    for lineno, row in enumerate(iter_jsonl(folder / "corpus.jsonl", ("_id",)), 1):
        text = " ".join(x for x in (row.get("title", "") or "", row.get("text", "") or "") if x).strip()
        if not text:
            raise DataError(f"{folder / 'corpus.jsonl'}:{lineno}: document {row['_id']!r} has no text")
        if row["_id"] in corpus:
            raise DataError(f"{folder / 'corpus.jsonl'}:{lineno}: duplicate document id {row['_id']!r}")
        corpus[str(row["_id"])] = text
    if not corpus:
        raise DataError(f"{folder / 'corpus.jsonl'}: no documents")
    queries: dict[str, str] = {}
    for lineno, row in enumerate(iter_jsonl(folder / "queries.jsonl", ("_id", "text"), ("text",)), 1):
        if row["_id"] in queries:
            raise DataError(f"{folder / 'queries.jsonl'}:{lineno}: duplicate query id {row['_id']!r}")
        queries[str(row["_id"])] = row["text"]
    if not queries:
        raise DataError(f"{folder / 'queries.jsonl'}: no queries")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise DataError(f"{qrels_path}: no qrels for split {split!r}")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if lineno == 1 and row and row[0] == "query-id":
                continue
            if len(row) != 3:
                raise DataError(f"{qrels_path}:{lineno}: expected 3 tab-separated columns, got {len(row)}")
            q, d, s = row
            if q not in queries:
                raise DataError(f"{qrels_path}:{lineno}: unknown query id {q!r}")
            if d not in corpus:
                raise DataError(f"{qrels_path}:{lineno}: unknown document id {d!r}")
            try:
                qrels.setdefault(q, {})[d] = int(float(s))
            except ValueError:
                raise DataError(f"{qrels_path}:{lineno}: score {s!r} is not a number") from None
    queries = {q: t for q, t in queries.items() if q in qrels}
    if not queries:
        raise DataError(f"{qrels_path}: no query has relevance judgements")
    return BeirData(corpus, queries, qrels)


def read_meta(folder: Path | str) -> dict:
    path = Path(folder) / "task.json"
    return read_json(path) if path.exists() else {}
