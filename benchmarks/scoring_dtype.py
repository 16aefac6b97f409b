"""Does scoring in bfloat16 move an ablation's numbers? The same trained folders scored on dev in float32 and bfloat16.

Each ablation cell trains a model and then embeds the whole test split (and, for Table 4's cells, the dev split) once:
in float32 that scoring is about half of a 30-step cell's time. This script loads committed cells as the harness
does (plain ``SentenceTransformer(path)`` with ``model_kwargs={"dtype": ...}``), scores them on the dev sets that
choose the variant map, in both dtypes, and reports per model the two averages, their paired-bootstrap difference
(over dev queries), the seconds each took, and whether the variant ranking on dev is the same.

    python benchmarks/scoring_dtype.py            # after `dvc repro ablations` (the variant cells)
"""

from __future__ import annotations

import argparse
import time
from statistics import median

from common import save

from stm import config, paths
from stm.core.evaluation import evaluate_model
from stm.core.sampling import selection_sets
from stm.core.stats import paired_bootstrap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", nargs=2, default=["float32", "bfloat16"])
    ap.add_argument("--name", default="scoring_dtype")
    args = ap.parse_args()
    profile, backbone = config.active_run()
    layout = paths.Layout(profile, backbone)
    a, ecfg, mcfg = config.load("ablations"), config.load("evaluation"), config.load("merging")
    dev = selection_sets(mcfg, ecfg, layout.tasks, layout.ablations / ".variant-dev")
    rows = []
    for variant in a.variants:
        for expert in a.variant_experts:
            folder = layout.ablation_dir(f"variant/{variant}/{expert}") / "adapter"
            row = {"model": f"{expert} {variant}"}
            scored = {}
            for dt in args.dtypes:
                cfg = ecfg.model_copy(update={"dtype": dt, "prefix_cache": False})
                t = time.perf_counter()
                scored[dt] = evaluate_model(folder, cfg, row["model"], layout.tasks, "dev", specs=dev)
                row[dt] = {"average": round(scored[dt].average, 5), "seconds": round(time.perf_counter() - t, 1)}
            d = paired_bootstrap(scored[args.dtypes[1]], scored[args.dtypes[0]])
            row["difference"] = d
            print(row, flush=True)
            rows.append(row)
    rank = {dt: [r["model"] for r in sorted(rows, key=lambda r: -r[dt]["average"])] for dt in args.dtypes}
    out = {"dev_sets": [s.name for s in dev], "rows": rows, "ranking": rank,
           "same_ranking": rank[args.dtypes[0]] == rank[args.dtypes[1]],
           # per model, so that one disturbed scoring does not set the figure; save() adds the CPU
           "speedup_median": round(median(r[args.dtypes[0]]["seconds"] / r[args.dtypes[1]]["seconds"] for r in rows), 2)}
    save(args.name, out)


if __name__ == "__main__":
    main()
