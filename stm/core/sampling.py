"""Seeded subsets of retrieval tasks: the merge search scores hundreds of candidates on *sampled* dev sets.

The paper selects merge weights on "a sampled subset of queries and documents" of four BEIR dev sets (sizes not
given, digest section 6). Encoding DBPedia's 4.6M documents for each of 300 candidates is out of reach, so
:func:`sample_task` writes a small BEIR folder once:

* ``queries`` queries drawn with a seed (all when the task has fewer);
* the corpus: every document judged for those queries, plus each query's top ``bm25_distractors`` BM25
  documents (hard distractors, as NanoBEIR builds its corpora, so the subset still separates good merges from
  bad ones), plus random documents up to ``corpus`` when that is larger.

The folder records where it came from, the seed and the sizes (``task.json``); its content hash enters every
score that is computed on it. A folder already written with the same settings is reused.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from stm.config import DevSampleConfig, EvaluationConfig, MergingConfig
from stm.core.beir import BeirData, read_meta, write_beir
from stm.core.tasks import TaskSpec, read_task, resolve, to_mteb
from stm.io import read_json, sha256_text


def bm25_topk(corpus: Sequence[str], queries: Sequence[str], k: int) -> np.ndarray:
    """Indices of each query's top-k corpus documents under bm25s's BM25 (the paper's BM25 baseline)."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(corpus), stopwords="en", show_progress=False), show_progress=False)
    docs, _ = retriever.retrieve(bm25s.tokenize(list(queries), stopwords="en", show_progress=False),
                                 k=min(k, len(corpus)), show_progress=False, n_threads=1)
    return np.asarray(docs)


def load_full(spec: TaskSpec) -> BeirData:
    """All of a task's corpus, queries and judgements for its split(s): local folders, or mteb's loader.

    An mteb task with several splits or subsets (CUREv1's disciplines) is pooled, ids prefixed by subset/split."""
    if spec.kind != "mteb":
        return read_task(spec)
    task = to_mteb(spec)
    task.load_data()
    corpus, queries, qrels = {}, {}, {}
    parts = [(sub, split, d) for sub, by_split in task.dataset.items() for split, d in by_split.items()
             if split in spec.splits]
    for sub, split, d in parts:
        pre = f"{sub}/{split}/" if len(parts) > 1 else ""
        for row in d["corpus"]:
            corpus[pre + str(row["id"])] = " ".join(x for x in (row.get("title") or "", row.get("text") or "") if x)
        for row in d["queries"]:
            queries[pre + str(row["id"])] = row["text"]
        for q, docs in d["relevant_docs"].items():
            qrels[pre + str(q)] = {pre + str(doc): int(s) for doc, s in docs.items()}
    queries = {q: t for q, t in queries.items() if q in qrels}
    return BeirData(corpus, queries, qrels)


def sample_task(spec: TaskSpec, cfg: DevSampleConfig, out_root: Path) -> TaskSpec:
    """A seeded subset of ``spec`` as a local BEIR folder under ``out_root``; the spec keeps name and instruction."""
    settings = {"source": spec.record(), "queries": cfg.queries, "corpus": cfg.corpus,
                "bm25_distractors": cfg.bm25_distractors, "seed": cfg.seed}
    key = sha256_text(json.dumps(settings, sort_keys=True, default=str))[:12]
    folder = Path(out_root) / f"{spec.name}-{key}"
    if not (folder / "task.json").exists() or read_json(folder / "task.json").get("sampling") != settings:
        data = load_full(spec)
        rng = random.Random(cfg.seed)
        qids = sorted(data.queries)
        if cfg.queries is not None and cfg.queries < len(qids):
            qids = sorted(rng.sample(qids, cfg.queries))
        dids = list(data.corpus)
        keep = {d for q in qids for d in data.qrels[q] if d in data.corpus}
        if cfg.bm25_distractors:
            texts = [data.corpus[d] for d in dids]
            top = bm25_topk(texts, [data.queries[q] for q in qids], cfg.bm25_distractors)
            keep |= {dids[j] for row in top for j in row}
        if cfg.corpus is not None and cfg.corpus > len(keep):
            rest = [d for d in dids if d not in keep]
            keep |= set(rng.sample(rest, min(cfg.corpus - len(keep), len(rest))))
        elif cfg.corpus is None:
            keep = set(dids)
        corpus = {d: data.corpus[d] for d in dids if d in keep}
        queries = {q: data.queries[q] for q in qids}
        qrels = {q: {d: s for d, s in data.qrels[q].items() if d in corpus} for q in qids}
        meta = {"name": spec.name, "group": spec.group, "instruction": spec.instruction, "sampling": settings,
                "sizes": {"queries": len(queries), "corpus": len(corpus),
                          "source_queries": len(data.queries), "source_corpus": len(data.corpus)}}
        write_beir(folder, corpus, queries, qrels, spec.split, meta)
    return replace(spec, kind="beir", folder=folder, eval_splits=(), subsets=None)


def sample_tasks(specs: Sequence[TaskSpec], cfg: DevSampleConfig, out_root: Path) -> list[TaskSpec]:
    """Every spec sampled, or the specs themselves when sampling is off (``queries`` and ``corpus`` null)."""
    if cfg.queries is None and cfg.corpus is None:
        return list(specs)
    return [sample_task(s, cfg, out_root) for s in specs]


def selection_sets(mcfg: MergingConfig, ecfg: EvaluationConfig, tasks: Path, out_root: Path) -> list[TaskSpec]:
    """The dev sets that choose: merge weights, and each expert's variant (Table 4 on dev). The dev split of
    ``merging.dev_tasks`` (null: the evaluation tasks; embedded ones from ``tasks``), sampled by ``merging.dev_sample``,
    written under ``out_root``."""
    return sample_tasks([resolve(t, tasks, "dev", ecfg.task_data) for t in (mcfg.dev_tasks or ecfg.tasks)],
                        mcfg.dev_sample, out_root)


def sample_record(spec: TaskSpec) -> dict:
    """What a (possibly sampled) task is: its record, plus the sampling settings and sizes when sampled."""
    meta = read_meta(spec.folder) if spec.folder is not None else {}
    return spec.record() | {k: meta[k] for k in ("sampling", "sizes") if k in meta}


# ------------------------------------------------------------------------------------ training order
def batch_order(n_rows: int, batch: int, steps: int, seed: int) -> list[list[int]]:
    """Row indices for each global batch: a fresh seeded permutation per epoch, dropping the tail."""
    per_epoch = n_rows // batch
    if per_epoch == 0:
        raise ValueError(f"{n_rows} rows cannot fill one batch of {batch}")
    order = []
    epoch = 0
    while len(order) < steps:
        g = torch.Generator().manual_seed(seed + epoch)
        perm = torch.randperm(n_rows, generator=g).tolist()
        order += [perm[i * batch : (i + 1) * batch] for i in range(per_epoch)]
        epoch += 1
    return order[:steps]


def training_steps(n_rows: int, batch: int, max_steps: int | None, epochs: float,
                   max_epochs: float | None = None) -> int:
    """The steps of a training run: ``max_steps``, else ``epochs`` passes over the rows; never more than
    ``max_epochs`` passes (a small split, such as the embedded Med-Synth's 300 rows, is not cycled for the steps a
    large one needs)."""
    steps = max_steps or max(1, math.floor(epochs * n_rows / batch))
    return min(steps, max(1, math.floor(max_epochs * n_rows / batch))) if max_epochs else steps


def rows_in_training_order(n_rows: int, batch: int, steps: int, seed: int) -> list[int]:
    """Each row index a training run of ``steps`` global batches sees, once, in the order it first sees them:
    what the synthesis stage writes hard negatives for (``synthesis.rows: trained``)."""
    return list(dict.fromkeys(i for b in batch_order(n_rows, batch, steps, seed) for i in b))
