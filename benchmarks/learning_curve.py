"""Where the embedded training budget runs out: dev nDCG@10 against training tokens, for one expert.

Usage: python benchmarks/learning_curve.py [--expert all] [--steps 160] [--every 20]

Trains one expert exactly as the training stage does (``stm.training.train``: the embedded profile's model,
loss, optimizer and linear schedule, here stretched over ``--steps``), and every ``--every`` steps scores the
model on the **dev** split of the embedded tasks (never test) with the core evaluation harness. Writes
``benchmarks/results/learning_curve.json`` (steps, real tokens seen, dev nDCG@10 per task and on average, the
resolved dtype, wall seconds) and ``benchmarks/results/learning_curve.png``. The main line's 40 steps are one
point of this curve; the curve says what more steps would buy, read on dev only.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import get_linear_schedule_with_warmup

from common import OUT, save
from stm import config, paths
from stm.core.evaluation import score_model, task_specs
from stm.paths import setup_environment
from stm.training.data import load_rows
from stm.training.loss import InfoNCE
from stm.training.train import Dist, Step, batch_order, build_model


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--expert", default="all")
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--every", type=int, default=20)
    args = ap.parse_args()
    base = config.load("training", profile="embedded")
    cfg = base.model_copy(update={"max_steps": args.steps})
    ecfg = config.load("evaluation", profile="embedded")
    embedded = paths.Layout("embedded", cfg.backbone)  # the embedded profile's data and tasks
    rows, data_record = load_rows(cfg, args.expert, embedded.processed)
    specs = task_specs(ecfg, embedded.tasks, "dev")
    model = build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, min(cfg.warmup_steps, args.steps), args.steps)
    step = Step(model, InfoNCE(cfg.temperature, cfg.hard_negatives_in_denominator), opt, sched, params, Dist(),
                cfg.use_hard_negatives, cfg.max_grad_norm)
    order = batch_order(len(rows), cfg.batch_size, args.steps, cfg.seed)

    def dev_point(done: int, tokens: int, train_s: float) -> dict:
        model.eval()  # score_model encodes without gradients
        r = score_model(model, ecfg, f"{args.expert}@{done}", specs, "dev")
        model.train()
        point = {"step": done, "tokens": tokens, "train_seconds": round(train_s, 1),
                 "dev_ndcg_at_10": r.average,
                 "per_task": {t: s["ndcg_at_10"] for t, s in r.scores.items()}}
        print(point, flush=True)
        return point

    curve, tokens, train_s = [dev_point(0, 0, 0.0)], 0, 0.0
    model.train()
    for i in range(args.steps):
        t0 = time.perf_counter()
        tokens += step([rows[j] for j in order[i]])[1]
        train_s += time.perf_counter() - t0
        if (i + 1) % args.every == 0 or i + 1 == args.steps:
            curve.append(dev_point(i + 1, tokens, train_s))
    main_line = base.max_steps
    save("learning_curve", {"expert": args.expert, "steps": args.steps, "every": args.every,
                            "main_line_steps": main_line, "batch_size": cfg.batch_size,
                            "learning_rate": cfg.learning_rate, "dtype": cfg.dtype, "data": data_record,
                            "split": "dev", "curve": curve})
    figure(curve, args.expert, main_line)


def figure(curve: list[dict], expert: str, main_line: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([p["tokens"] / 1e3 for p in curve], [p["dev_ndcg_at_10"] for p in curve], marker="o", label="average")
    for task in curve[0]["per_task"]:
        ax.plot([p["tokens"] / 1e3 for p in curve], [p["per_task"][task] for p in curve], lw=0.8, alpha=0.6,
                label=task.removeprefix("pubmed-"))
    at = next((p for p in curve if p["step"] >= main_line), None)
    if at:
        ax.axvline(at["tokens"] / 1e3, color="grey", ls=":", label=f"main line ({main_line} steps)")
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("dev nDCG@10")
    ax.set_title(f"learning curve, {expert} expert (dev split)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "learning_curve.png", dpi=120)


if __name__ == "__main__":
    main()
