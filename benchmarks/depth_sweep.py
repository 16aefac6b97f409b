"""The embedded backbone, chosen on dev: depth N of SmolLM2, LoRA on its top K layers, learning rate and steps.

Usage: python benchmarks/depth_sweep.py [--cells 8:4:3e-4:40 12:4:3e-4:40 ...] [--expert all]

Each cell trains FT-all (``stm.training.train``, exactly as the training stage does, with the embedded profile's
settings and the cell's overrides: ``backbone: smollm2-<N>l``, ``training.lora.layers: K``, the learning rate and
``max_steps``) and scores it on the **dev** split of the embedded tasks, never test. Cells of one depth share the
frozen-prefix cache (the bottom N-K layers are the base's). Every cell records its dev nDCG@10 per task and per
query, its training seconds, and a paired bootstrap against the reference (the deepest cell with LoRA on every layer); adapters go to the git-ignored
``artifacts/sweep/`` and a finished cell is not trained again. Writes ``benchmarks/results/depth_sweep.json`` and
``depth_sweep.png``. The main line's `backbone` and `training` values in params.yaml are read off this table.
"""

from __future__ import annotations

import argparse
import json
import time

from common import OUT, reference_record, save
from stm import config, paths
from stm.core import assets
from stm.core import retriever as R
from stm.core.assets import resolve_model
from stm.core.evaluation import evaluate_model, prefix_cache, score_model, task_specs
from stm.figures.claims import bootstrap_mean, paired_bootstrap
from stm.io import environment_record
from stm.paths import setup_environment
from stm.training.train import task_instructions, train

EMBEDDED = paths.Layout("embedded", "sweep")  # the embedded profile's data and tasks (per profile)

DEFAULT_CELLS = ["8:4:3e-4:40", "8:8:3e-4:40", "8:4:1e-3:40", "8:8:1e-3:40", "12:all:1e-3:40", "16:8:1e-3:40",
                 "30:all:3e-4:40", "12:all:1e-3:80", "8:all:0:0", "12:all:0:0"]  # the committed sweep; steps 0: untrained


def parse(cell: str) -> dict:
    n, k, lr, steps, *rest = cell.split(":")
    # any other training key, its value as JSON (temperature=0.02, batch_size=16)
    overrides = {k: json.loads(v) for k, v in (r.split("=", 1) for r in rest if "=" in r)}
    passage, dtype = ([r for r in rest if "=" not in r] + [None, None])[:2]
    return {"layers": int(n), "lora_layers": None if k == "all" else int(k), "learning_rate": float(lr),
            "steps": int(steps), "train_passage_tokens": int(passage) if passage else None,
            "dtype": dtype or "float32", **({"overrides": overrides} if overrides else {})}


def run_cell(cell: dict, expert: str, ecfg, specs) -> dict:
    backbone = f"smollm2-{cell['layers']}l"
    assets.fetch(backbone)
    name = f"{backbone}_k{cell['lora_layers'] or 'all'}_lr{cell['learning_rate']:g}_s{cell['steps']}"
    if cell.get("train_passage_tokens"):
        name += f"_p{cell['train_passage_tokens']}"
    if cell.get("dtype", "float32") != "float32":  # training and scoring in this dtype (bfloat16: AMX tiles)
        name += f"_{cell['dtype']}"
        ecfg = ecfg.model_copy(update={"dtype": cell["dtype"]})
    for key, value in cell.get("overrides", {}).items():
        name += f"_{key}{value}"
    base = config.load("training", profile="embedded")
    cfg = base.model_copy(update={
        "backbone": backbone, "learning_rate": cell["learning_rate"], "max_steps": cell["steps"],
        "train_passage_tokens": cell.get("train_passage_tokens"), "dtype": cell.get("dtype", "float32"),
        "lora": base.lora.model_copy(update={"layers": cell["lora_layers"]})})
    if cell.get("overrides"):  # validated as params.yaml's values are
        cfg = type(cfg).model_validate(cfg.model_dump() | cell["overrides"])
    out = paths.ROOT / "artifacts" / "sweep" / name
    record_file = out / "dev.json"
    if record_file.exists():
        return json.loads(record_file.read_text())
    t0 = time.perf_counter()
    if cell["steps"] == 0:  # the untrained backbone in the training format: where the cells start
        rec = {"final_loss": None, "mean_tokens_per_s": None, "data": None}
    else:
        rec = train(cfg, expert, out, EMBEDDED.processed).dump()
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    if cell["steps"] == 0:
        model = R.build(resolve_model(backbone), cfg.format, ecfg.dtype, cfg.bidirectional, task_instructions())
        dev = score_model(model, ecfg, name, specs, "dev")
        out.mkdir(parents=True, exist_ok=True)
    else:
        dev = evaluate_model(out / "adapter", ecfg, name, EMBEDDED.tasks, "dev", specs=specs, prefix=prefix_cache(ecfg))
    row = {"cell": name, **cell, "backbone": backbone, "train_seconds": round(train_s, 1),
           "eval_seconds": round(time.perf_counter() - t1, 1), "final_loss": rec["final_loss"],
           "mean_tokens_per_s": rec["mean_tokens_per_s"], "dev_ndcg_at_10": dev.average,
           "per_task": {t: s["ndcg_at_10"] for t, s in dev.scores.items()},
           "per_query_ndcg_at_10": dev.per_query_ndcg_at_10, "data": rec["data"]}
    record_file.write_text(json.dumps(row))
    print({k: v for k, v in row.items() if k not in ("per_query_ndcg_at_10", "data")}, flush=True)
    return row


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", nargs="+", default=DEFAULT_CELLS,
                    help="N:K:lr:steps[:P[:dtype]][:key=value...] (K 'all': every layer; P: training passages cut to P "
                         "tokens; dtype: training and dev scoring, float32 unless given; key=value: any other "
                         "training key, e.g. temperature=0.02)")
    ap.add_argument("--expert", default="all")
    ap.add_argument("--name", default="depth_sweep", help="results file stem in benchmarks/results/")
    ap.add_argument("--reference", help="an evaluation record on dev to hold every cell against (e.g. the committed "
                                        "main line's expert: python -m stm evaluate --split dev --out FILE)")
    ap.add_argument("--reference-label", default="reference")
    args = ap.parse_args()
    ecfg = config.load("evaluation", profile="embedded")
    specs = task_specs(ecfg, EMBEDDED.tasks, "dev")
    rows = [run_cell(parse(c), args.expert, ecfg, specs) for c in args.cells]
    # the reference: --reference, else the full-depth model with LoRA everywhere when swept, else the first cell
    full = [r for r in rows if r["lora_layers"] is None and r["steps"]]
    if args.reference:
        ref = reference_record(args.reference, args.reference_label)
    else:
        ref = max(full, key=lambda r: (r["layers"], -r["learning_rate"])) if full else rows[0]
    table = []
    for r in rows:
        mean, lo, hi = bootstrap_mean(r)
        table.append({k: v for k, v in r.items() if k not in ("per_query_ndcg_at_10", "data")}
                     | {"ci95": [round(lo, 4), round(hi, 4)],
                        "vs_reference": None if r is ref else paired_bootstrap(r, ref)})
    reference = ({k: v for k, v in ref.items() if k != "per_query_ndcg_at_10"} if args.reference else ref["cell"])
    save(args.name, {"expert": args.expert, "split": "dev", "reference": reference, "cells": table,
                     "data": rows[0]["data"] if args.reference else ref["data"], "environment": environment_record()})
    figure(table, args.name, reference if args.reference else None)


def figure(table: list[dict], name: str = "depth_sweep", reference: dict | None = None) -> None:
    """One bar per cell; the reference is a cell's bar, or (``reference``, a record outside the sweep) a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 3.8))
    labels = [f"N={r['layers']}, K={r['lora_layers'] or 'all'}\nlr {r['learning_rate']:g}\n{r['steps']} steps"
              + (f"\npassages {r['train_passage_tokens']}" if r.get("train_passage_tokens") else "")
              + (f"\n{r['dtype']}" if r.get("dtype", "float32") != "float32" else "")
              + "".join(f"\n{k} {v}" for k, v in r.get("overrides", {}).items()) for r in table]
    means = [r["dev_ndcg_at_10"] for r in table]
    err = [[m - r["ci95"][0] for m, r in zip(means, table)], [r["ci95"][1] - m for m, r in zip(means, table)]]
    ref = next((i for i, r in enumerate(table) if r["vs_reference"] is None), None)
    colors = ["#dd8452" if i == ref else "#4c72b0" for i in range(len(table))]
    ax.bar(range(len(table)), means, yerr=err, capsize=3, color=colors)
    if ref is not None:
        ax.text(ref, means[ref] + 0.09, "reference", ha="center", fontsize=7)
    if reference is not None:
        ax.axhline(reference["dev_ndcg_at_10"], color="#dd8452", lw=1.2, ls="--")
        ax.text(len(table) - 0.5, reference["dev_ndcg_at_10"] + 0.02, reference["label"], ha="right", fontsize=7,
                color="#dd8452")
    for i, r in enumerate(table):
        ax.text(i, 0.02, f"{r['train_seconds']:.0f}s", ha="center", color="white", fontsize=7)
    ax.set_xticks(range(len(table)), labels, fontsize=7)
    ax.set_xlabel("125 dev queries, 4 tasks; intervals: bootstrap over queries", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("dev nDCG@10 (4 tasks, 95% CI)")
    ax.set_title("FT-all on SmolLM2 cut to N layers, LoRA on the top K (dev split; bar text: training time)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=120)


if __name__ == "__main__":
    main()
