"""Our training loop against sentence-transformers' own ``SentenceTransformerTrainer``, on the same start and batches.

    python benchmarks/st_trainer.py [--steps 16] [--batch 8]

Both start from the same LoRA-initialised retriever (``stm.training.train.build_model``: seeded, so identical) and
see the same triples in the same order: ours through ``batch_order``; the trainer's through a sequential batch
sampler over the rows laid out in that order. The loss is the same (``MultipleNegativesRankingLoss`` at scale
1/temperature: in-batch positives and every hard negative), with AdamW, linear warm-up and decay, gradient clipping
at the same settings. Written to ``benchmarks/results/st_trainer.json``: both loss curves, their largest
difference, the two adapters' largest weight difference, and seconds per step. The model is the tests' tiny random
Llama (2 layers, hidden 32) with a real tokenizer, so the comparison is of the loop, not of the backbone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import save  # noqa: E402
from stm import config  # noqa: E402
from stm.config import SPLIT_NAMES, TrainingConfig  # noqa: E402
from stm.core import retriever as R  # noqa: E402
from stm.io import write_jsonl  # noqa: E402
from stm.paths import setup_environment  # noqa: E402


def _triples(root: Path) -> Path:
    from conftest import make_triples

    for k, split in enumerate(SPLIT_NAMES):
        write_jsonl(root / "splits" / f"{split}.jsonl", make_triples(96, split, seed=k))
    return root


def ours(cfg: TrainingConfig, processed: Path, out: Path) -> tuple[list[float], float]:
    from stm.training.train import train

    t = time.perf_counter()
    train(cfg, "nlu", out, processed)
    seconds = time.perf_counter() - t
    return [h["loss"] for h in json.loads((out / "train_log.json").read_text())], seconds


def library(cfg: TrainingConfig, processed: Path, out: Path, stop_at: int | None = None,
            resume: Path | None = None) -> tuple[list[float], float, object]:
    """The trainer's run; ``stop_at``: checkpoint at that step and stop (a kill after a save); ``resume``: go on from
    such a checkpoint, as ``trainer.train(resume_from_checkpoint=...)`` does."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from torch.utils.data import BatchSampler, SequentialSampler
    from transformers import TrainerCallback

    from stm.training.data import load_rows
    from stm.training.train import batch_order, build_model, training_steps

    model = build_model(cfg)
    rows, _ = load_rows(cfg, "nlu", processed)
    steps = training_steps(len(rows), cfg.batch_size, cfg.max_steps, cfg.epochs, cfg.max_epochs)
    flat = [rows[i] for batch in batch_order(len(rows), cfg.batch_size, steps, cfg.seed) for i in batch]
    data = Dataset.from_dict({"anchor": [R.prompt_for(model, r["instruction"]) + r["query"] for r in flat],
                              "positive": [r["positive"] for r in flat], "negative": [r["negative"] for r in flat]})

    class InOrder(SentenceTransformerTrainer):  # our batch order, not the trainer's seeded shuffle
        def get_batch_sampler(self, dataset, batch_size, drop_last, *a, **k):
            return BatchSampler(SequentialSampler(dataset), batch_size, drop_last)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size, max_steps=steps,
        learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, lr_scheduler_type="linear",
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm or 0.0, optim="adamw_torch", seed=cfg.seed,
        logging_steps=1, save_strategy="steps" if stop_at else "no", save_steps=stop_at or 500, report_to=[], dataloader_drop_last=True, use_cpu=True,
        disable_tqdm=True, router_mapping={"anchor": "query", "positive": "document", "negative": "document"},
        prompts={c: model.prompts.get(R.DOCUMENT) for c in ("positive", "negative")} if model.prompts.get(R.DOCUMENT)
        else None)  # the passages' prompt, as ours embeds them (the queries carry their own instruction above)
    class Stop(TrainerCallback):  # the checkpoint at stop_at is written, then the run ends, as a kill would end it
        def on_step_end(self, args, state, control, **kwargs):
            if stop_at and state.global_step >= stop_at:
                control.should_training_stop = True

    trainer = InOrder(model=model, args=args, train_dataset=data,
                      loss=MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature), callbacks=[Stop()])
    t = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t
    return [h["loss"] for h in trainer.state.log_history if "loss" in h], seconds, model


def main() -> None:
    setup_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    from safetensors.torch import load_file
    from tiny import make_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backbone = make_model(tmp / "tiny", "llama")
        processed = _triples(tmp / "processed")
        cfg = config.validate("training", config.dump(config.load("training", profile="embedded")) | dict(
            backbone=str(backbone), batch_size=args.batch, max_steps=args.steps, warmup_steps=2, learning_rate=5e-3,
            checkpoint_every=10_000, dtype="float32", lora={"r": 4, "alpha": 8}, variants={},
            format={"max_query_tokens": 32, "max_passage_tokens": 48}))
        a, a_s = ours(cfg, processed, tmp / "ours")
        b, b_s, model = library(cfg, processed, tmp / "st")
        mine = load_file(str(tmp / "ours" / "adapter" / "adapter_model.safetensors"))

        def adapter(m) -> dict:
            return {n.replace(".default", "").split("base_model.model.")[-1]: p.detach()
                    for n, p in m.named_parameters() if p.requires_grad}

        by_suffix = adapter(model)
        diffs = [float((t - by_suffix[n.split("base_model.model.")[-1]]).abs().max()) for n, t in mine.items()
                 if n.split("base_model.model.")[-1] in by_suffix]
        # the trainer's resume: killed after the checkpoint at half the steps, then resumed from it
        half = args.steps // 2
        first, _, _ = library(cfg, processed, tmp / "st-resume", stop_at=half)
        resume = {"killed_after_step": half, "loss_before": [round(x, 5) for x in first]}
        try:
            rest, _, resumed = library(cfg, processed, tmp / "st-resume",
                                       resume=tmp / "st-resume" / f"checkpoint-{half}")
            again = adapter(resumed)
            resume |= {"loss_after": [round(x, 5) for x in rest],
                       "max_abs_loss_diff_vs_uninterrupted": round(max(
                           abs(x - y) for x, y in zip(first + rest, b, strict=True)), 6),
                       "adapter_max_abs_diff_vs_uninterrupted": max(
                           float((again[n] - t).abs().max()) for n, t in by_suffix.items())}
        except Exception as e:  # noqa: BLE001 - what the trainer's resume does with our retriever is the measurement
            resume["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    record = {"steps": args.steps, "batch": args.batch, "loss_ours": [round(x, 5) for x in a],
              "loss_trainer": [round(x, 5) for x in b],
              "max_abs_loss_diff": round(max(abs(x - y) for x, y in zip(a, b, strict=True)), 6),
              "adapter_tensors_compared": len(diffs), "adapter_max_abs_diff": max(diffs) if diffs else None,
              "seconds_per_step_ours": round(a_s / args.steps, 3), "seconds_per_step_trainer": round(b_s / args.steps, 3),
              "trainer_resume": resume}
    print(record)
    save("st_trainer", record)


if __name__ == "__main__":
    main()
