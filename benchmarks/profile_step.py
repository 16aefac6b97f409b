"""Where a training step's time goes, by operator, on this machine: the training stage's own ``Step``.

Usage: python benchmarks/profile_step.py [--expert search] [--steps 3] [--out profile_step]

Times ``stm.training.train.Step`` (the function the training stage runs) on real embedded triples, once per dtype
(float32, bfloat16), after one warm-up step: ``--steps`` steps without the profiler for the speed, then as many
under ``torch.profiler`` for the operator shares. Writes the top operators by self CPU time, the seconds per
step (with and without the profiler), real tokens per second and MFU (6 x non-embedding parameters x tokens,
against the matmul peak of the same dtype measured in the same run) to ``benchmarks/results/profile_step.json``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from common import matmul_peak_tflops, save
from stm import config, paths
from stm.core import retriever as R
from stm.paths import setup_environment
from stm.training.data import load_rows
from stm.training.loss import InfoNCE
from stm.training.train import Dist, Step, build_model


def run(cfg, rows, steps: int, top: int) -> dict:
    model = build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    step = Step(model, InfoNCE(cfg.temperature), opt, sched, params, Dist(), True, cfg.max_grad_norm)
    model.train()
    data = [rows[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(2 * steps + 1)]
    step(data[0])  # warm-up
    # speed without the profiler (its bookkeeping slowed the bf16 step from 10.0 to 13.2 s on the AMD CPU,
    # profile_step_amd.json), then the same number of steps on the next batches under it, for the operator shares
    tokens, t = 0, time.perf_counter()
    for b in data[1 : steps + 1]:
        tokens += step(b)[1]
    secs = time.perf_counter() - t
    p_tokens, t = 0, time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in data[steps + 1 :]:
            p_tokens += step(b)[1]
    p_secs = time.perf_counter() - t
    n_params = sum(p.numel() for n, p in R.transformer(model).model.named_parameters()
                   if "embed_tokens" not in n and "lora_" not in n)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    peak = matmul_peak_tflops(getattr(torch, cfg.dtype), n=1024)
    tok_s = tokens / secs
    return {
        "seconds_per_step": round(secs / steps, 2), "tokens_per_s": round(tok_s, 1),
        "profiled_seconds_per_step": round(p_secs / steps, 2), "profiled_tokens_per_s": round(p_tokens / p_secs, 1),
        "non_embedding_params": n_params, "matmul_peak_tflops": round(peak, 4),
        "mfu_non_embedding": round(6 * n_params * tok_s / (peak * 1e12), 4),
        "top_operators": [{"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 4),
                           "calls": e.count} for e in ops],
    }


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--expert", default="search")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", default="profile_step", help="result name: one per kind of machine (profile_step_amx)")
    args = ap.parse_args()
    base = config.load("training", profile="embedded")
    rows, _ = load_rows(base, args.expert, paths.Layout("embedded", "x").processed)
    out = {"expert": args.expert, "amx_bf16": torch.cpu._is_amx_tile_supported(), "batch": base.batch_size,
           "format": base.format.model_dump(), "dtypes": {}}
    for dtype in ("float32", "bfloat16"):
        out["dtypes"][dtype] = run(base.model_copy(update={"dtype": dtype}), rows, args.steps, args.top)
        print(dtype, {k: v for k, v in out["dtypes"][dtype].items() if k != "top_operators"}, flush=True)
    f32, b16 = out["dtypes"]["float32"], out["dtypes"]["bfloat16"]
    out["speedup_float32_vs_bfloat16"] = round(f32["tokens_per_s"] / b16["tokens_per_s"], 2)
    save(args.out, out)


if __name__ == "__main__":
    main()
