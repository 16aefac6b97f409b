"""The training loop: LoRA on a decoder, InfoNCE over (query, positive, hard negative) triples.

One code path for a laptop CPU and a GPU cluster:

* single process: ``python -m stm train --expert med_real``;
* several processes: ``torchrun --nproc-per-node 8 -m stm train ...`` or ``accelerate launch -m stm
  train ...``. Each process embeds its slice of the global batch; candidates are gathered across
  processes with gradients (so every query sees the whole global batch as negatives) and the LoRA
  gradients are averaged with one flat all-reduce. LoRA has few parameters, so this plain
  all-reduce is cheaper to reason about than DDP, which does not support the two forward passes
  (queries, then passages) per step that we make.

Checkpoints (adapter, optimizer, scheduler, step) are written atomically every
``checkpoint_every`` steps, beside the output folder (``.<name>-checkpoint``) rather than inside it,
because ``dvc repro`` deletes a stage's outputs before rerunning it. A killed run resumes from the
last one and ends with the same adapter as an uninterrupted run (data order depends only on the seed
and the step). A checkpoint written for another configuration or other data is not resumed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from stm.config import TrainingConfig, dump
from stm.data.assets import resolve_model
from stm.io import atomic_path, environment_record, sha256_text, write_json
from stm.training.data import load_rows
from stm.training.loss import InfoNCE
from stm.training.model import Retriever, load_backbone

log = logging.getLogger(__name__)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group that torchrun / accelerate describe in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return Dist(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def device_for(dist: Dist) -> torch.device:
    if torch.cuda.is_available():
        if dist.local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"process with local rank {dist.local_rank} has no GPU: this node has {torch.cuda.device_count()}. "
                "Launch at most one process per GPU (--nproc-per-node), or hide the GPUs "
                "(CUDA_VISIBLE_DEVICES='') to train on CPU processes over gloo")
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def lora_config(cfg: TrainingConfig) -> LoraConfig:
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, bias="none")


def build_retriever(cfg: TrainingConfig, device: torch.device) -> Retriever:
    model, tokenizer = load_backbone(resolve_model(cfg.backbone), cfg.dtype, cfg.bidirectional)
    return Retriever(add_lora(model, cfg), tokenizer, cfg.format).to(device)


def add_lora(model: torch.nn.Module, cfg: TrainingConfig) -> torch.nn.Module:
    """LoRA on the backbone (from ``init_adapter`` if given), with gradient checkpointing if configured."""
    torch.manual_seed(cfg.seed)  # identical LoRA initialisation on every process and every resume
    model = get_peft_model(model, lora_config(cfg))
    if cfg.init_adapter:  # continue from an earlier stage's LoRA weights (pre-training, then fine-tuning)
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(Path(cfg.init_adapter) / "adapter_model.safetensors")))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def batch_order(n_rows: int, batch: int, steps: int, seed: int) -> list[list[int]]:
    """Row indices for each global batch: a fresh seeded permutation per epoch, dropping the tail."""
    per_epoch = n_rows // batch
    if per_epoch == 0:
        raise ValueError(f"{n_rows} rows cannot fill one batch of {batch}")
    order = []
    epoch = 0
    while len(order) < steps:
        g = torch.Generator().manual_seed(seed + epoch)
        perm = torch.randperm(n_rows, generator=g).tolist()
        order += [perm[i * batch : (i + 1) * batch] for i in range(per_epoch)]
        epoch += 1
    return order[:steps]


def _sync_grads(params: list[torch.nn.Parameter], dist: Dist) -> None:
    if dist.world == 1:
        return
    grads = [p.grad for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= dist.world
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}-checkpoint"


def _save_checkpoint(path: Path, retriever: Retriever, opt, sched, step: int, history: list, fingerprint: str) -> None:
    with atomic_path(path) as tmp:
        tmp.mkdir()
        torch.save({"params": {n: p.detach().cpu() for n, p in _trainable(retriever.model).items()},
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                    "history": history, "fingerprint": fingerprint}, tmp / "state.pt")


def _load_checkpoint(path: Path, retriever: Retriever, opt, sched, fingerprint: str) -> tuple[int, list] | None:
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return None
    params = _trainable(retriever.model)
    with torch.no_grad():
        for n, t in state["params"].items():
            params[n].copy_(t)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return state["step"], state["history"]


def query_truncation(retriever: Retriever, rows: list[dict], max_tokens: int, seed: int, sample: int = 2000) -> float:
    """Fraction of training queries (with their instruction) longer than ``max_tokens``, on a seeded sample."""
    rows = random.Random(seed).sample(rows, min(sample, len(rows)))
    ids = retriever.tokenizer([retriever.text.query(r["query"], r["instruction"]) for r in rows])["input_ids"]
    return sum(len(i) > max_tokens for i in ids) / max(1, len(rows))


class Interrupted(RuntimeError):
    """Raised by the ``interrupt_after`` test hook to simulate a kill."""


def train(cfg: TrainingConfig, expert: str, out_dir: Path, processed: Path | None = None,
          interrupt_after: int | None = None) -> dict:
    """Train one expert (or FT-all with ``expert='all'``); write the adapter and its records to ``out_dir``."""
    out_dir = Path(out_dir)
    rows, data_record = load_rows(cfg, expert, processed)  # fails before any compute on bad input
    dist = init_distributed()
    if cfg.batch_size % dist.world:
        raise ValueError(f"training.batch_size {cfg.batch_size} is not divisible by {dist.world} processes")
    device = device_for(dist)
    steps = cfg.max_steps or max(1, math.floor(cfg.epochs * len(rows) / cfg.batch_size))
    retriever = build_retriever(cfg, device)
    params = list(_trainable(retriever.model).values())
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, min(cfg.warmup_steps, steps), steps)
    loss_fn = InfoNCE(cfg.temperature, cfg.hard_negatives_in_denominator, cfg.gather_across_devices)
    order = batch_order(len(rows), cfg.batch_size, steps, cfg.seed)
    ckpt = checkpoint_dir(out_dir)
    fingerprint = sha256_text(json.dumps([expert, dist.world, dump(cfg), data_record], sort_keys=True, default=str))
    start, history = 0, []
    if (ckpt / "state.pt").exists():
        resumed = _load_checkpoint(ckpt, retriever, opt, sched, fingerprint)
        if resumed is None:
            log.warning("%s: checkpoint %s was written for another configuration or data; starting over", expert, ckpt)
        else:
            start, history = resumed
            log.info("resuming %s from step %d", expert, start)
    truncated = query_truncation(retriever, rows, cfg.format.max_query_tokens, cfg.seed)
    if truncated > 0.2:
        log.warning("%s: %.0f%% of queries (instruction + query) exceed max_query_tokens=%d and are cut at the end",
                    expert, 100 * truncated, cfg.format.max_query_tokens)
    local = cfg.batch_size // dist.world
    has_extra = "extra_negative" in rows[0]
    retriever.train()
    bar = tqdm(total=steps, initial=start, desc=f"train {expert}", disable=not dist.main, unit="step")
    for step in range(start, steps):
        t0 = time.perf_counter()
        batch = [rows[i] for i in order[step][dist.rank * local : (dist.rank + 1) * local]]
        q = retriever.tokenize([retriever.text.query(r["query"], r["instruction"]) for r in batch],
                               cfg.format.max_query_tokens)
        docs = [r["positive"] for r in batch]
        if cfg.use_hard_negatives:
            docs += [r["negative"] for r in batch]
        if has_extra and cfg.use_hard_negatives:
            docs += [r["extra_negative"] for r in batch]
        d = retriever.tokenize([retriever.text.passage(t) for t in docs], cfg.format.max_passage_tokens)
        qe = retriever(**q)
        de = retriever(**d).split(len(batch))
        loss = loss_fn(qe, *de)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        _sync_grads(params, dist)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        tokens = int(q["attention_mask"].sum() + d["attention_mask"].sum()) * dist.world
        dt = time.perf_counter() - t0
        value = loss.detach()
        if dist.world > 1:  # log the global-batch loss: the mean of the per-process means
            torch.distributed.all_reduce(value)
            value = value / dist.world
        value = value.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"training {expert}: loss is {value} at step {step + 1}")
        history.append({"step": step + 1, "loss": round(value, 6), "lr": sched.get_last_lr()[0],
                        "tokens_per_s": round(tokens / dt, 1)})
        bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{tokens / dt:.0f}")
        bar.update(1)
        done = step + 1
        if dist.main and (done % cfg.checkpoint_every == 0) and done < steps:
            _save_checkpoint(ckpt, retriever, opt, sched, done, history, fingerprint)
        if interrupt_after is not None and done >= interrupt_after:
            raise Interrupted(f"interrupted after step {done}")
    bar.close()
    record = {
        "expert": expert,
        "backbone": cfg.backbone,
        "backbone_path": resolve_model(cfg.backbone),
        "variant": cfg.variant,
        "steps": steps,
        "world_size": dist.world,
        "loss": loss_fn.get_config_dict(),
        "config": dump(cfg),
        "data": data_record,
        "final_loss": history[-1]["loss"] if history else None,
        "query_truncated_fraction": round(truncated, 4),
        "mean_tokens_per_s": round(sum(h["tokens_per_s"] for h in history) / max(1, len(history)), 1),
        "environment": environment_record(),
    }
    if dist.main:
        with atomic_path(out_dir / "adapter") as tmp:
            retriever.model.save_pretrained(tmp)
            retriever.tokenizer.save_pretrained(tmp)
            write_json(tmp / "stm_retriever.json", retriever_record(cfg))
        write_json(out_dir / "train_log.json", history)
        write_json(out_dir / "train_record.json", record)
        if ckpt.exists():
            shutil.rmtree(ckpt)
    if dist.world > 1:
        torch.distributed.barrier()
    return record


def retriever_record(cfg: TrainingConfig) -> dict:
    """What a loader needs to embed exactly like training: saved next to every adapter and export."""
    return {"backbone": cfg.backbone, "backbone_path": resolve_model(cfg.backbone),
            "bidirectional": cfg.bidirectional, "format": cfg.format.model_dump(), "dtype": cfg.dtype}
