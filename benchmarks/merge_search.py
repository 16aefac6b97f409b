"""Is a larger merge search worth its seconds? The main line's chosen merge against a larger grid, on dev.

Usage: python benchmarks/merge_search.py [--grid 12] [--budget 6] [--methods linear ties task_arithmetic]

Per method, a reference grid of --grid candidates (the paper's grid, seed 99, the uniform point first) and the main
line's chosen candidate (results/<profile>/<backbone>/merging.json) are scored on the dev tasks as the merge stage
scores them (in memory, the frozen prefix cached). Reported per method:

* the grid's best against the main line's choice, by the paired bootstrap over dev queries. The best of many
  candidates on 40 queries a task is biased upwards, so also:
* a held-out check: the candidate that is best on one half of each task's dev queries, scored on the other half,
  against the main line's choice on that half (both ways round);
* each search strategy (grid, random, cmaes) at --budget evaluations: how many it needed to come within 0.005 of
  the reference grid's best (candidates already scored are read, not re-encoded).
"""

from __future__ import annotations

import argparse
import time

from common import save
from stm import config
from stm.core.evaluation import Encoder, dev_score, evaluate, prefix_cache
from stm.core.records import MergeReport
from stm.core.sampling import selection_sets
from stm.core.stats import paired_bootstrap
from stm.merging.inmemory import DeltaMerger
from stm.merging.methods import get_method
from stm.merging.search import Candidate, search
from stm.merging.stage import expert_adapters
from stm.paths import setup_environment


def _key(weights, densities) -> tuple:
    return tuple(weights), tuple(densities or ())


def _half(per_query: dict, parity: int) -> dict:
    """Every other query of each task (sorted ids), as a record paired_bootstrap reads."""
    return {"per_query_ndcg_at_10": {t: {q: v for i, (q, v) in enumerate(sorted(qs.items())) if i % 2 == parity}
                                     for t, qs in per_query.items()}}


def _mean(rec: dict) -> float:
    tasks = rec["per_query_ndcg_at_10"].values()
    return sum(sum(q.values()) / len(q) for q in tasks) / len(tasks)


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=12)
    ap.add_argument("--budget", type=int, default=6)
    ap.add_argument("--methods", nargs="+", default=["linear", "ties"])
    args = ap.parse_args()
    run = config.Run.of()
    mcfg, ecfg = run.load("merging"), run.load("evaluation")
    adapters = expert_adapters(run.paths, mcfg)
    names = list(adapters)
    report = MergeReport.load(MergeReport.path(run.paths))
    dev = selection_sets(mcfg, ecfg, run.paths.tasks, run.paths.merged.parent / f".{run.paths.merged.name}-dev")
    merger = DeltaMerger(list(adapters.values()), ecfg.dtype)
    prefix = prefix_cache(ecfg, merger.frozen_layers)
    out = {"experts": names, "grid": args.grid, "budget": args.budget, "dev_tasks": [t.name for t in dev],
           "methods": {}}
    for method in args.methods:
        m = get_method(method)
        scored: dict[tuple, dict] = {}  # (weights, densities) -> the candidate's row, each scored once

        def row(c: Candidate, m=m, scored=scored) -> dict:
            key = _key(c.weights, c.densities)
            if key not in scored:
                t = time.perf_counter()
                r = evaluate(Encoder(merger.merge(m, c.weights, c.densities), "candidate", ecfg.batch_size,
                                     prefix=prefix), dev, "dev")
                scored[key] = {"weights": c.weights, "densities": c.densities,
                               "score": dev_score(r, mcfg.search.ndcg_weight), "ndcg_at_10": r.averages["all"],
                               "seconds": round(time.perf_counter() - t, 1),
                               "per_query_ndcg_at_10": r.per_query_ndcg_at_10}
            return scored[key]

        def score(c: Candidate, row=row) -> float:
            return row(c)["score"]

        main_line = report.methods.get(method)
        chosen = row(Candidate(list(main_line.chosen.weights), main_line.chosen.densities)) if main_line else None
        grid = search("grid", score, len(names), mcfg.search.model_copy(update={"budget": args.grid, "seed": 99}),
                      m.uses_density)
        best = max((row(Candidate(h["weights"], h["densities"])) for h in grid), key=lambda r: r["score"])
        summary = ("weights", "densities", "score", "ndcg_at_10")
        entry = {"candidates": [{k: v for k, v in r.items() if k != "per_query_ndcg_at_10"} for r in scored.values()],
                 "grid_best": {k: best[k] for k in summary},
                 "seconds_per_candidate": round(sum(r["seconds"] for r in scored.values()) / len(scored), 1)}
        if chosen is not None:
            entry["main_line_chosen"] = {k: chosen[k] for k in summary}
            entry["grid_best_vs_chosen"] = paired_bootstrap(best, chosen)
            ck, held_out = _key(chosen["weights"], chosen["densities"]), []
            for pick in (0, 1):  # choose on one half of the queries, score on the other
                halves = {k: (_half(r["per_query_ndcg_at_10"], pick), _half(r["per_query_ndcg_at_10"], 1 - pick))
                          for k, r in scored.items()}
                k = max(halves, key=lambda k: _mean(halves[k][0]))
                held_out.append({"picked_on_half": pick, "weights": list(k[0]), "densities": list(k[1]) or None,
                                 "held_out_ndcg_at_10": round(_mean(halves[k][1]), 4),
                                 "chosen_held_out_ndcg_at_10": round(_mean(halves[ck][1]), 4),
                                 "vs_chosen": paired_bootstrap(halves[k][1], halves[ck][1])})
            entry["held_out"] = held_out
        target = best["score"]
        entry["strategies"] = {}
        for strategy in ("grid", "random", "cmaes"):
            hist = search(strategy, score, len(names), mcfg.search.model_copy(update={"budget": args.budget}),
                          m.uses_density)
            hit = next((i + 1 for i, h in enumerate(hist) if h["score"] >= target - 0.005), None)
            entry["strategies"][strategy] = {"best": max(h["score"] for h in hist), "evaluations_to_within_0.005": hit}
        out["methods"][method] = entry
        print(method, {k: v for k, v in entry.items() if k != "candidates"}, flush=True)
    save("merge_search", out)


if __name__ == "__main__":
    main()
