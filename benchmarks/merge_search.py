"""Merge-weight search at equal budgets, and in-memory scoring vs writing + reloading through mergekit.

Usage: python benchmarks/merge_search.py [--grid 40] [--budget 12]

A reference grid of --grid candidates (linear merges of the trained experts, scored on the dev tasks in
memory) gives the best score found; each strategy then runs with --budget evaluations and we report how many
evaluations it needed to come within 0.005 of that best.
"""

from __future__ import annotations

import argparse
import shutil
import time

from common import save
from stm import config
from stm.core.evaluation import Encoder, dev_score, evaluate, task_specs
from stm.merging.inmemory import DeltaMerger
from stm.merging.methods import get_method, mergekit_config, run_mergekit
from stm.merging.run import merged_retriever, save_full_model
from stm.merging.search import search
from stm.merging.stage import expert_adapters
from stm.paths import setup_environment


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=40)
    ap.add_argument("--budget", type=int, default=12)
    args = ap.parse_args()
    run = config.Run.of()
    mcfg, ecfg = run.load("merging"), run.load("evaluation")
    adapters = expert_adapters(run.paths, mcfg)
    names = list(adapters)
    dev = task_specs(ecfg, run.paths.tasks, "dev")
    merger = DeltaMerger(list(adapters.values()), ecfg.dtype)

    def score(c):
        r = merger.merge(get_method("linear"), c.weights)
        return dev_score(evaluate(Encoder(r, "candidate"), dev, "dev"), mcfg.search.ndcg_weight)

    t = time.perf_counter()
    grid = search("grid", score, len(names), mcfg.search.model_copy(update={"budget": args.grid, "seed": 99}), False)
    per_inmem = (time.perf_counter() - t) / len(grid)
    target = max(h["score"] for h in grid)
    out = {"reference_grid": args.grid, "reference_best": target, "seconds_per_candidate_in_memory": round(per_inmem, 2),
           "strategies": {}}
    for strategy in ("grid", "random", "cmaes"):
        hist = search(strategy, score, len(names), mcfg.search.model_copy(update={"budget": args.budget}), False)
        hit = next((i + 1 for i, h in enumerate(hist) if h["score"] >= target - 0.005), None)
        out["strategies"][strategy] = {"best": max(h["score"] for h in hist), "evaluations_to_within_0.005": hit}
    # one candidate the slow way: mergekit writes a model, we reload and score it
    template = adapters[names[0]]
    tmp = run.paths.artifacts / "bench-merge"
    full = [save_full_model(adapters[n], tmp / "experts" / n, template) for n in names]
    t = time.perf_counter()
    run_mergekit(mergekit_config("linear", full, [0.5] * len(names), None), tmp / "out")
    retr = merged_retriever(template, tmp / "out", ecfg.dtype)
    dev_score(evaluate(Encoder(retr, "mk"), dev, "dev"), mcfg.search.ndcg_weight)
    out["seconds_per_candidate_mergekit"] = round(time.perf_counter() - t, 2)
    out["speedup_in_memory"] = round(out["seconds_per_candidate_mergekit"] / per_inmem, 2)
    shutil.rmtree(tmp, ignore_errors=True)
    save("merge_search", out)


if __name__ == "__main__":
    main()
