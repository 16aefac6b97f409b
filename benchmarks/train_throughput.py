"""Training throughput: our training step vs the plainest correct alternative, same model and batch.

Usage: python benchmarks/train_throughput.py [--backbone smollm2] [--steps 6]

Both sides run one LoRA + InfoNCE step per iteration on identical batches of real embedded triples.
"ours" is stm.training.train (bf16 base, fp32 LoRA, one passage forward for positives and negatives);
"plain" is a hand-written PyTorch + peft loop in fp32 that encodes queries, positives and negatives in
three forward passes. Prints tokens/s, the ratio, peak memory, and the model-FLOPs utilisation against
this machine's bf16 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from common import matmul_peak_tflops, peak_rss_mb, save
from stm import config
from stm.paths import setup_environment
from stm.training.data import load_rows
from stm.training.loss import InfoNCE
from stm.training.train import build_retriever


def batches(rows, batch, steps):
    return [rows[i * batch : (i + 1) * batch] for i in range(steps)]


def step_ours(retriever, opt, loss_fn, batch, cfg):
    q = retriever.tokenize([retriever.text.query(r["query"], r["instruction"]) for r in batch], cfg.format.max_query_tokens)
    d = retriever.tokenize([retriever.text.passage(t) for t in [r["positive"] for r in batch] + [r["negative"] for r in batch]],
                           cfg.format.max_passage_tokens)
    loss = loss_fn(retriever(**q), *retriever(**d).split(len(batch)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return int(q["attention_mask"].sum() + d["attention_mask"].sum())


def step_plain(retriever, opt, batch, cfg):
    def emb(texts, n):
        t = retriever.tokenizer(texts, padding=True, truncation=True, max_length=n, return_tensors="pt")
        h = retriever.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state
        m = t["attention_mask"].unsqueeze(-1).float()
        return F.normalize((h * m).sum(1) / m.sum(1), dim=-1), int(t["attention_mask"].sum())

    q, a = emb([retriever.text.query(r["query"], r["instruction"]) for r in batch], cfg.format.max_query_tokens)
    p, b = emb([retriever.text.passage(r["positive"]) for r in batch], cfg.format.max_passage_tokens)
    n, c = emb([retriever.text.passage(r["negative"]) for r in batch], cfg.format.max_passage_tokens)
    logits = torch.cat([q @ p.T, q @ n.T], 1) / cfg.temperature
    loss = F.cross_entropy(logits, torch.arange(len(batch)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return a + b + c


def run(name, cfg, rows, steps, fn):
    retriever = build_retriever(cfg, torch.device("cpu"))
    params = [p for p in retriever.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    loss_fn = InfoNCE(cfg.temperature)
    data = batches(rows, cfg.batch_size, steps + 1)
    fn(retriever, opt, loss_fn, data[0], cfg) if name == "ours" else fn(retriever, opt, data[0], cfg)  # warm-up
    tokens, start = 0, time.perf_counter()
    for b in data[1:]:
        tokens += fn(retriever, opt, loss_fn, b, cfg) if name == "ours" else fn(retriever, opt, b, cfg)
    secs = time.perf_counter() - start
    n_params = sum(p.numel() for p in retriever.model.parameters())
    return {"tokens_per_s": round(tokens / secs, 1), "seconds_per_step": round(secs / steps, 2), "params": n_params,
            "tokens": tokens}


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    cfg = config.load("training", backbone=args.backbone, profile="embedded")
    rows, _ = load_rows(cfg, "all")
    peak = matmul_peak_tflops()
    ours = run("ours", cfg, rows, args.steps, step_ours)
    plain = run("plain", cfg.model_copy(update={"dtype": "float32"}), rows, args.steps, step_plain)
    # training FLOPs ~ 6 * params * tokens (forward + backward); LoRA skips weight grads of the base (~4x instead of 6x)
    flops_per_token = 4 * ours["params"]
    mfu = ours["tokens_per_s"] * flops_per_token / (peak * 1e12)
    save(f"train_throughput_{args.backbone}", {
        "backbone": args.backbone, "batch": cfg.batch_size, "max_query_tokens": cfg.format.max_query_tokens,
        "max_passage_tokens": cfg.format.max_passage_tokens, "ours": ours, "plain_fp32_loop": plain,
        "speedup_vs_plain": round(ours["tokens_per_s"] / plain["tokens_per_s"], 2),
        "bf16_matmul_peak_tflops": round(peak, 3), "mfu_ours": round(mfu, 4), "peak_rss_mb": round(peak_rss_mb()),
    })


if __name__ == "__main__":
    main()
