"""Uncertainty of retrieval scores: bootstrap over queries (one model) and paired bootstrap (two models).

A comparison of two models resamples queries within each task (the same draw for both models); the statistic is
the difference of the task-averaged nDCG@10 and the verdict reads its 95% interval: above zero "holds", below zero
"does not hold", across zero "inconclusive". The per-query scores are mteb's nDCG@10 (``per_query_ndcg_at_10`` in
every evaluation record). In the core because the model cards of the training and merge stages carry intervals too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stm.core.records import Evaluation

N_BOOT, SEED = 10_000, 13
Scores = Evaluation | Mapping  # a record, or its JSON (the benchmarks read files as they were written)


def _per_query(r: Scores) -> dict[str, dict[str, float]]:
    return r.per_query_ndcg_at_10 if isinstance(r, Evaluation) else (r.get("per_query_ndcg_at_10") or {})


def _aligned(a: Scores, b: Scores) -> list[tuple[np.ndarray, np.ndarray]]:
    pa, pb = _per_query(a), _per_query(b)
    out = []
    for task in sorted(set(pa) & set(pb)):
        qids = sorted(set(pa[task]) & set(pb[task]))
        out.append((np.array([pa[task][q] for q in qids]), np.array([pb[task][q] for q in qids])))
    return out


def bootstrap_mean(record: Scores, n: int = N_BOOT, seed: int = SEED) -> tuple[float, float, float] | None:
    """(task-averaged nDCG@10, 2.5% and 97.5% bootstrap percentiles) of one model, or None without per-query scores."""
    tasks = _aligned(record, record)
    if not tasks:
        return None
    rng = np.random.default_rng(seed)
    boots = sum(a[rng.integers(0, len(a), (n, len(a)))].mean(1) for a, _ in tasks) / len(tasks)
    return float(np.mean([a.mean() for a, _ in tasks])), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def paired_bootstrap(a: Scores, b: Scores, n: int = N_BOOT, seed: int = SEED) -> dict | None:
    """Mean difference a - b of task-averaged nDCG@10, its 95% interval and the verdict; None if not comparable."""
    tasks = _aligned(a, b)
    if not tasks:
        return None
    rng = np.random.default_rng(seed)
    boots = np.zeros(n)
    for x, y in tasks:
        idx = rng.integers(0, len(x), (n, len(x)))
        boots += (x[idx].mean(1) - y[idx].mean(1)) / len(tasks)
    diff = float(np.mean([x.mean() - y.mean() for x, y in tasks]))
    lo, hi = float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))
    verdict = "holds" if lo > 0 else "does not hold" if hi < 0 else "inconclusive"
    return {"diff": round(diff, 4), "ci95": [round(lo, 4), round(hi, 4)], "verdict": verdict,
            "queries": int(sum(len(x) for x, _ in tasks))}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (a filter's acceptance rate); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - half) / (1 + z * z / n)), float((centre + half) / (1 + z * z / n))
