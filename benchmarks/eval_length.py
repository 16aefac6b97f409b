"""The evaluation's passage limit, chosen on dev: the main line's experts scored on the dev split with
``document_length`` set to each given token count (the shipped folders record the one chosen).

Usage: python benchmarks/eval_length.py [--experts all med_real] [--lengths 128 112 96]

Loads each expert's adapter folder as the training stage wrote it, sets the passage limit and scores the dev
tasks in the evaluation's dtype; writes dev nDCG@10 and seconds per cell to benchmarks/results/eval_length.json.
"""

from __future__ import annotations

import argparse
import time

from common import save
from stm.config import Run
from stm.core import retriever as R
from stm.core.evaluation import score_model, task_specs
from stm.paths import setup_environment


def main() -> None:
    setup_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", nargs="+", default=["all", "med_real"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[128, 112, 96])
    args = ap.parse_args()
    run = Run.of()
    layout, ecfg = run.paths, run.load("evaluation")
    specs = task_specs(ecfg, layout.tasks, "dev")
    cells = []
    for expert in args.experts:
        model = R.load(layout.experts / expert / "adapter", ecfg.dtype)
        for n in args.lengths:
            R.transformer(model).document_length = n
            t = time.perf_counter()
            dev = score_model(model, ecfg, f"{expert}@{n}", specs, "dev")
            cells.append({"expert": expert, "document_length": n, "dev_ndcg_at_10": dev.average,
                          "seconds": round(time.perf_counter() - t, 1)})
            print(cells[-1], flush=True)
    save("eval_length", {"backbone": run.backbone, "dtype": ecfg.dtype, "cells": cells})


if __name__ == "__main__":
    main()
