"""Training throughput on a GPU with the paper's backbone shapes (random weights, no download).

    python benchmarks/train_gpu.py                          # every shape, on the GPU
    python benchmarks/train_gpu.py --shapes qwen3-0.6b --steps 3
    python benchmarks/train_gpu.py --tiny --device cpu      # 2-layer versions: checks the script itself

Random weights built from the published configs run at the same speed as trained ones. Inputs are random
token ids at fixed lengths (64-token queries, 256-token passages, no padding), so every path sees the same
tokens. Two paths per shape, in the same process:

* ``plain``: the reference of the benchmark issue, a hand-written PyTorch + peft LoRA InfoNCE step in bf16
  with sdpa attention, queries, positives and negatives in three forwards, at micro-batch 16 triples;
* ``ours``: the path ``stm.training.train`` runs with the paper profile (LoRA on all linear layers, bf16,
  bidirectional attention, last-token pooling, positives and negatives in one forward, sentence-transformers'
  MNRL loss), at the paper's global batch for that backbone (Table 9) in a single forward, with gradient
  checkpointing, so that every query sees the whole global batch as negatives, as the paper trains.

Model FLOPs per token are 6 x non-embedding parameters (forward + backward; the recomputation of gradient
checkpointing is not counted as useful work), the convention of the issue's reference table. MFU is given
against the matmul peak measured here with a large ``torch.matmul`` and against the nominal 785 TFLOP/s.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModel

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from common import matmul_peak_tflops, save  # noqa: E402
from tiny import make_model  # noqa: E402

from stm import config  # noqa: E402
from stm.core import retriever as R  # noqa: E402
from stm.training.loss import InfoNCE  # noqa: E402
from stm.training.train import Dist, Step  # noqa: E402

# Published configs (the models' config.json on the hub), shape-relevant fields only.
SHAPES = {
    "smollm2-135m": ("llama", 256, dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                        tie_word_embeddings=True)),
    "qwen3-0.6b": ("qwen3", 256, dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                      num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                      vocab_size=151936, tie_word_embeddings=True)),
    "gemma-2b": ("gemma", 128, dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                                    num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=256000,
                                    hidden_activation="gelu_pytorch_tanh")),
    "phi4-mini": ("phi3", 64, dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                                   num_attention_heads=24, num_key_value_heads=8, vocab_size=200064,
                                   partial_rotary_factor=0.75, tie_word_embeddings=True)),
}
# Reference figures from the benchmark issue (plain step, micro-batch 16, one H100).
REFERENCE = {"smollm2-135m": 23.5e3, "qwen3-0.6b": 23.6e3, "gemma-2b": 20.8e3, "phi4-mini": 9.0e3}
PAPER_PAIRS = {"med_synth": 431_000, "med_real": 306_000, "search": 438_000, "nlu": 251_000, "all": 1_426_000}
Q_LEN, P_LEN, NOMINAL_PEAK = 64, 256, 785.0


def build(shape: str, device: torch.device, tiny: bool) -> torch.nn.Module:
    model_type, _, kw = SHAPES[shape]
    kw = kw | ({"num_hidden_layers": 2} if tiny else {})
    cfg = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(0)
    with device:
        return AutoModel.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")


def non_embedding_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lora_" not in n)


def batch(n: int, length: int, vocab: int, device) -> dict[str, torch.Tensor]:
    ids = torch.randint(100, vocab, (n, length), device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def plain_step(model, opt, b: int, vocab: int, device) -> int:
    def emb(n, length):
        h = model(**batch(n, length, vocab, device)).last_hidden_state[:, -1]
        return F.normalize(h.float(), dim=-1)

    q, p, n = emb(b, Q_LEN), emb(b, P_LEN), emb(b, P_LEN)
    logits = torch.cat([q @ p.T, q @ n.T], 1) / 0.05
    loss = F.cross_entropy(logits, torch.arange(b, device=device))
    opt.zero_grad(set_to_none=False)
    loss.backward()
    opt.step()
    return b * (Q_LEN + 2 * P_LEN)


def ours_step(model, step: Step, b: int, vocab: int, device) -> int:
    """The training stage's own update (``Step.update``) on the retriever's own forward (``R.embed``)."""
    qe = R.embed(model, batch(b, Q_LEN, vocab, device))
    de = R.embed(model, batch(2 * b, P_LEN, vocab, device)).split(b)
    step.update(qe, list(de))
    return b * (Q_LEN + 2 * P_LEN)


def retriever_over(decoder: torch.nn.Module, cfg, device) -> "R.SentenceTransformer":
    """The training stage's retriever (pooling, bidirectional switch) over a random-weight decoder of the shape:
    the tokenizer is irrelevant here (inputs are token ids), so a tiny one stands in."""
    shell = make_model(Path(tempfile.mkdtemp()) / "shell")
    model = R.build(str(shell), cfg.format, "bfloat16", cfg.bidirectional, device=device)
    return R.with_decoder(model, decoder)


def measure(shape: str, path: str, b: int, args, device) -> dict:
    cfg = config.load("training", profile="paper", backbone="qwen3-0.6b").model_copy(update={"batch_size": b})
    model = build(shape, device, args.tiny)
    vocab = model.config.vocab_size
    n_params = non_embedding_params(model)
    if path == "ours":  # the training stage's own setup: retriever, LoRA, optimizer, step
        model = R.add_lora(retriever_over(model, cfg, device), cfg.lora, cfg.seed,
                           gradient_checkpointing=cfg.gradient_checkpointing)
    else:
        torch.manual_seed(cfg.seed)
        model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                 target_modules=cfg.lora.target_modules))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    if path == "ours":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        loss_fn = InfoNCE(cfg.temperature, cfg.hard_negatives_in_denominator)
        step = partial(ours_step, model, Step(model, loss_fn, opt, sched, params, Dist(), True, cfg.max_grad_norm),
                       b, vocab, device)
    else:
        step = partial(plain_step, model, opt, b, vocab, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        for _ in range(args.warmup):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        tokens, t = 0, time.perf_counter()
        for _ in range(args.steps):
            tokens += step()
        sync()
        secs = time.perf_counter() - t
    except torch.OutOfMemoryError:
        result = {"path": path, "batch": b, "oom": True}
    else:
        tok_s = tokens / secs
        result = {"path": path, "batch": b, "gradient_checkpointing": bool(path == "ours" and cfg.gradient_checkpointing),
                  "tokens_per_s": round(tok_s), "seconds_per_step": round(secs / args.steps, 3),
                  "model_tflops": round(6 * n_params * tok_s / 1e12, 1),
                  "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None}
    result["non_embedding_params"] = n_params
    del model, opt, step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(shape, result, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="2-layer models and batch 4: a check of the script")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="also write the JSON here (e.g. $OUT on a lent GPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    peak = matmul_peak_tflops(n=8192 if device.type == "cuda" else 1024)
    print(f"measured bf16 matmul peak: {peak:.0f} TFLOP/s", flush=True)
    rows = {}
    for shape in args.shapes:
        paper_batch = 4 if args.tiny else SHAPES[shape][1]
        plain = measure(shape, "plain", 4 if args.tiny else 16, args, device)
        ours = measure(shape, "ours", paper_batch, args, device)
        row = {"plain_mb16": plain, "ours_paper_batch": ours, "reference_tokens_per_s": REFERENCE[shape]}
        for key in ("plain_mb16", "ours_paper_batch"):
            r = row[key]
            if not r.get("oom"):
                r["mfu_measured_peak"] = round(r["model_tflops"] / peak, 3)
                r["mfu_nominal_785"] = round(r["model_tflops"] / NOMINAL_PEAK, 3)
        if not ours.get("oom") and not plain.get("oom"):
            row["speedup_vs_plain"] = round(ours["tokens_per_s"] / plain["tokens_per_s"], 2)
            row["speedup_vs_reference"] = round(ours["tokens_per_s"] / REFERENCE[shape], 2)
            # one epoch at the benchmark's lengths (64 + 2 x 256 tokens per triple); real data pads less
            row["hours_per_expert"] = {k: round(v * (Q_LEN + 2 * P_LEN) / ours["tokens_per_s"] / 3600, 2)
                                       for k, v in PAPER_PAIRS.items()}
        rows[shape] = row
    record = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "tiny": args.tiny,
              "matmul_peak_tflops": round(peak, 1), "query_tokens": Q_LEN, "passage_tokens": P_LEN,
              "transformers": __import__("transformers").__version__, "peft": __import__("peft").__version__,
              "shapes": rows}
    path = save("train_gpu" + ("_tiny" if args.tiny else ""), record)
    if args.out:
        Path(args.out).write_text(path.read_text())


if __name__ == "__main__":
    main()
