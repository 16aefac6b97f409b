"""Training throughput on 2 CPU cores: our step vs sentence-transformers' trainer vs the plainest loop.

Usage: python benchmarks/train_throughput.py [--backbone smollm2] [--expert search] [--steps 6]

All three train the same retriever (``stm.training.train.build_model``: the SentenceTransformer with LoRA) on
the same expert's real embedded triples, one LoRA + InfoNCE step per batch, after one warm-up step:

* ``ours``: ``stm.training.train.Step``, what the training stage runs (prompt-aware pooling, positives and
  negatives in one passage forward, MNRL through ``InfoNCE``);
* ``st_trainer``: ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` (scale 1/temperature),
  the same prompts and lengths, no evaluation or checkpoints;
* ``plain``: a hand-written loop over the decoder (three forwards, mean pooling, cross-entropy).

Seconds per step are measured; tokens per second use the mean real tokens of ``ours``' batches for every path,
so the ratios are per token. MFU counts non-embedding parameters only (6 x params x tokens) against the bf16
matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from common import matmul_peak_tflops, peak_rss_mb, save
from stm import config, paths
from stm.core import retriever as R
from stm.paths import setup_environment
from stm.training.data import load_rows
from stm.training.loss import InfoNCE
from stm.training.train import Dist, Step, build_model


def batches(rows, batch, steps):
    return [rows[i * batch : (i + 1) * batch] for i in range(steps)]


def setup(cfg):
    model = build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    return model, params, opt


def run_ours(cfg, data):
    model, params, opt = setup(cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    step = Step(model, InfoNCE(cfg.temperature), opt, sched, params, Dist(), True, cfg.max_grad_norm)
    model.train()
    step(data[0])  # warm-up
    tokens, start = 0, time.perf_counter()
    for b in data[1:]:
        tokens += step(b)[1]
    return time.perf_counter() - start, tokens


def run_plain(cfg, data):
    model, params, opt = setup(cfg)
    decoder, tok = R.transformer(model).model, R.tokenizer(model)
    model.train()

    def emb(texts, n):
        t = tok(texts, padding=True, truncation=True, max_length=n, return_tensors="pt")
        h = decoder(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state
        m = t["attention_mask"].unsqueeze(-1).to(h.dtype)
        return F.normalize(((h * m).sum(1) / m.sum(1)).float(), dim=-1)

    def one(batch):
        q = emb([R.prompt_for(model, r["instruction"]) + r["query"] for r in batch], cfg.format.max_query_tokens)
        doc = model.prompts[R.DOCUMENT]
        p = emb([doc + r["positive"] for r in batch], cfg.format.max_passage_tokens)
        n = emb([doc + r["negative"] for r in batch], cfg.format.max_passage_tokens)
        loss = F.cross_entropy(torch.cat([q @ p.T, q @ n.T], 1) / cfg.temperature, torch.arange(len(batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()

    one(data[0])
    start = time.perf_counter()
    for b in data[1:]:
        one(b)
    return time.perf_counter() - start, None


def run_st_trainer(cfg, data):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    model, _, _ = setup(cfg)
    rows = [r for b in data for r in b]
    instruction = rows[0]["instruction"]
    assert all(r["instruction"] == instruction for r in rows), "one expert: one instruction"
    ds = Dataset.from_dict({"anchor": [r["query"] for r in rows], "positive": [r["positive"] for r in rows],
                            "negative": [r["negative"] for r in rows]})
    doc = model.prompts[R.DOCUMENT]
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.batch_size, max_steps=len(data),
        learning_rate=cfg.learning_rate, warmup_steps=0, lr_scheduler_type="constant", report_to=[],
        save_strategy="no", logging_strategy="no", dataloader_drop_last=True, seed=cfg.seed, use_cpu=True,
        max_grad_norm=cfg.max_grad_norm or 0.0, disable_tqdm=True,
        prompts={"anchor": R.prompt_for(model, instruction), "positive": doc, "negative": doc})
    loss = MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss,
                               callbacks=[Clock()]).train()
    return times[-1] - times[0], None


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--expert", default="search")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    cfg = config.load("training", backbone=args.backbone, profile="embedded")
    rows, _ = load_rows(cfg, args.expert, paths.Layout("embedded", "x").processed)
    data = batches(rows, cfg.batch_size, args.steps + 1)
    peak = matmul_peak_tflops()
    secs, tokens = run_ours(cfg, data)
    tokens_per_step = tokens / args.steps
    out = {"backbone": args.backbone, "expert": args.expert, "batch": cfg.batch_size, "steps": args.steps,
           "format": cfg.format.model_dump(), "dtype": cfg.dtype, "real_tokens_per_step": round(tokens_per_step, 1),
           "bf16_matmul_peak_tflops": round(peak, 3), "paths": {}}
    n_params = sum(p.numel() for n, p in R.transformer(build_model(cfg)).model.named_parameters()
                   if "embed_tokens" not in n and "lora_" not in n)
    for name, fn in (("ours", None), ("st_trainer", run_st_trainer), ("plain", run_plain)):
        if fn is not None:
            secs, _ = fn(cfg, data)
        tok_s = tokens_per_step * args.steps / secs
        out["paths"][name] = {"seconds_per_step": round(secs / args.steps, 3), "tokens_per_s": round(tok_s, 1),
                              "mfu_non_embedding": round(6 * n_params * tok_s / (peak * 1e12), 4)}
        print(name, out["paths"][name], flush=True)
    ours = out["paths"]["ours"]["tokens_per_s"]
    out["non_embedding_params"] = n_params
    out["ratio_ours_vs_st_trainer"] = round(ours / out["paths"]["st_trainer"]["tokens_per_s"], 3)
    out["ratio_ours_vs_plain"] = round(ours / out["paths"]["plain"]["tokens_per_s"], 3)
    out["peak_rss_mb"] = round(peak_rss_mb())
    save(f"train_throughput_{args.backbone}", out)


if __name__ == "__main__":
    main()
