"""Merge-weight search strategies (a registry): ``grid``, ``random`` and ``cmaes``.

Each proposes candidates within a budget and records every score, so the full history is saved.
With a :class:`ScoreCache`, each score is appended to a JSONL file as soon as it is known, so a killed
search resumes: the strategies are seeded, so they propose the same candidates again, and the cached ones
cost nothing. Candidates are scored on **dev** tasks only: score = w * nDCG@10 + (1 - w) * Recall@10, averaged
over the dev tasks (``merging.search.ndcg_weight``; the paper names both metrics but not how it
combined them).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stm.config import MergeSearchConfig
from stm.io import ResumeLog
from stm.registry import Registry


@dataclass
class Candidate:
    weights: list[float]
    densities: list[float] | None = None

    def as_dict(self) -> dict:
        return {"weights": self.weights, "densities": self.densities}


Scorer = Callable[[Candidate], float]
log = logging.getLogger(__name__)


class ScoreCache:
    """Scores of candidates, appended to ``path`` one JSON line each as they are computed (``stm.io.ResumeLog``).

    ``fingerprint`` names everything the score depends on (experts, dev data, dtypes, metric weights); lines
    with another fingerprint are ignored, so a changed input rescores rather than reusing stale numbers.
    """

    def __init__(self, path: Path | str, fingerprint: str):
        self.log = ResumeLog(path, key="candidate", fingerprint=fingerprint)
        self.path = self.log.path
        self.reused = 0

    @property
    def scores(self) -> dict[str, float]:
        return {k: r["score"] for k, r in self.log.rows.items()}

    @property
    def seconds(self) -> dict[str, float]:
        """How long each candidate took to score, when it was scored."""
        return {k: r["seconds"] for k, r in self.log.rows.items() if r.get("seconds") is not None}

    def wrap(self, score: Scorer) -> Scorer:
        def cached(cand: Candidate) -> float:
            key = json.dumps(cand.as_dict(), sort_keys=True)
            if key in self.log.rows:
                self.reused += 1
                return self.log.rows[key]["score"]
            t0 = time.perf_counter()
            value = score(cand)
            self.log.append([{"candidate": key, "score": value, "seconds": round(time.perf_counter() - t0, 3)}])
            return value

        return cached


STRATEGIES: Registry[Callable[..., list[dict]]] = Registry("search strategy", "merging.search.strategy")


def _run(candidates: Iterator[Candidate], score: Scorer, budget: int) -> list[dict]:
    history = []
    for cand in itertools.islice(candidates, budget):
        history.append(cand.as_dict() | {"score": score(cand)})
    return history


@STRATEGIES.register("grid")
def grid(score: Scorer, n: int, cfg: MergeSearchConfig, uses_density: bool) -> list[dict]:
    """The paper's grid (alpha in {0, .1, ..., .9} per expert, rho in {.1, ..., .9} for TIES), sampled
    down to the budget with a fixed seed; the uniform point (0.5 each) always comes first."""
    rng = random.Random(cfg.seed)
    points = [p for p in itertools.product(cfg.alphas, repeat=n) if sum(p) > 0]
    mid = min(cfg.alphas, key=lambda a: abs(a - 0.5))
    uniform = tuple([mid] * n)
    rest = [p for p in points if p != uniform]
    chosen = [uniform] + rng.sample(rest, min(len(rest), max(0, cfg.budget - 1)))

    def gen():
        for w in chosen:
            d = [rng.choice(cfg.densities) for _ in range(n)] if uses_density else None
            yield Candidate(list(w), d)

    return _run(gen(), score, cfg.budget)


@STRATEGIES.register("random")
def random_search(score: Scorer, n: int, cfg: MergeSearchConfig, uses_density: bool) -> list[dict]:
    """Best of N uniform draws, as in the authors' release (weights in [0, 1], densities in [0.1, 0.9])."""
    rng = random.Random(cfg.seed)

    def gen():
        while True:
            w = [round(rng.random(), 3) for _ in range(n)]
            if sum(w) == 0:
                continue
            d = [round(rng.uniform(0.1, 0.9), 3) for _ in range(n)] if uses_density else None
            yield Candidate(w, d)

    return _run(gen(), score, cfg.budget)


@STRATEGIES.register("cmaes")
def cmaes(score: Scorer, n: int, cfg: MergeSearchConfig, uses_density: bool) -> list[dict]:
    """CMA-ES over weights (and densities), as in the release's Gemma model, via the ``cma`` package."""
    import cma

    dims = n * (2 if uses_density else 1)
    es = cma.CMAEvolutionStrategy([0.5] * dims, 0.25, {"bounds": [0.0, 1.0], "seed": cfg.seed + 1,
                                                       "popsize": max(4, min(8, cfg.budget // 3)), "verbose": -9})
    history: list[dict] = []
    while len(history) < cfg.budget:
        xs = es.ask()
        losses = []
        for x in xs:
            if len(history) >= cfg.budget:
                break
            w = [round(float(v), 4) for v in x[:n]]
            if sum(w) == 0:
                w = [0.5] * n
            d = [round(min(max(float(v), 0.01), 1.0), 4) for v in x[n:]] if uses_density else None
            s = score(Candidate(w, d))
            history.append({"weights": w, "densities": d, "score": s})
            losses.append(-s)
        if len(losses) == len(xs):
            es.tell(xs, losses)
    return history


def search(strategy: str, score: Scorer, n: int, cfg: MergeSearchConfig, uses_density: bool,
           cache: ScoreCache | None = None) -> list[dict]:
    run = STRATEGIES.lookup(strategy)
    if cache is None:
        return run(score, n, cfg, uses_density)
    history = run(cache.wrap(score), n, cfg, uses_density)
    if cache.reused:
        log.info("merge search resumed: %d of %d candidates' scores read from %s", cache.reused, len(history), cache.path)
    return history


def best(history: list[dict]) -> dict:
    return max(history, key=lambda h: h["score"])
