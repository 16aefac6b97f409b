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
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from stm.config import TrainingConfig, dump
from stm.core import retriever as R
from stm.core.assets import resolve_model
from stm.core.records import TrainingRecord
from stm.core.sampling import batch_order, training_steps
from stm.core.tasks import EMBEDDED_TASKS, PAPER_TASKS
from stm.io import atomic_path, environment_record, sha256_file, sha256_text, write_json
from stm.training.data import load_rows
from stm.training.loss import InfoNCE

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


def task_instructions() -> dict[str, str]:
    """Every registered task's instruction: saved as prompts with each model, so a folder knows its tasks."""
    return {name: t["instruction"] for name, t in EMBEDDED_TASKS.items()} | {
        name: instruction for name, (_, instruction, _) in PAPER_TASKS.items()}


def build_model(cfg: TrainingConfig, device: torch.device | str = "cpu") -> SentenceTransformer:
    """The retriever to train: the backbone as a ``SentenceTransformer`` with a LoRA adapter."""
    model = R.build(resolve_model(cfg.backbone), cfg.format, cfg.dtype, cfg.bidirectional, task_instructions(),
                    device=device)
    R.add_lora(model, cfg.lora, cfg.seed, cfg.init_adapter, cfg.gradient_checkpointing)
    return model.to(device)


def weights_fingerprint(backbone: str) -> list[str]:
    """The backbone's weight files by content (a checkpoint of other weights under the same name is not resumed);
    a hub id that is not on disk yet is named by itself (its revision is pinned by the assets stage)."""
    folder = Path(resolve_model(backbone))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return [sha256_file(f) for f in files] or [str(backbone)]


def _sync_grads(params: list[torch.nn.Parameter], dist: Dist) -> None:
    if dist.world == 1:
        return
    grads = [p.grad for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= dist.world
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def _rng_state() -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}-checkpoint"


def _save_checkpoint(path: Path, model: SentenceTransformer, opt, sched, step: int, history: list,
                     fingerprint: str) -> None:
    with atomic_path(path) as tmp:
        tmp.mkdir()
        torch.save({"params": {n: p.detach().cpu() for n, p in _trainable(model).items()},
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                    "history": history, "fingerprint": fingerprint}, tmp / "state.pt")


def _load_checkpoint(path: Path, model: SentenceTransformer, opt, sched, fingerprint: str) -> tuple[int, list] | None:
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return None
    params = _trainable(model)
    with torch.no_grad():
        for n, t in state["params"].items():
            params[n].copy_(t)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return state["step"], state["history"]


def query_truncation(model: SentenceTransformer, rows: list[dict], max_tokens: int, seed: int,
                     sample: int = 2000) -> float:
    """Fraction of training queries (with their instruction) longer than ``max_tokens``, on a seeded sample."""
    rows = random.Random(seed).sample(rows, min(sample, len(rows)))
    ids = R.tokenizer(model)([R.prompt_for(model, r["instruction"]) + r["query"] for r in rows])["input_ids"]
    return sum(len(i) > max_tokens for i in ids) / max(1, len(rows))


@dataclass
class Step:
    """One optimisation step on a global batch of triples; the GPU benchmark calls the same function."""

    model: SentenceTransformer
    loss_fn: InfoNCE
    opt: torch.optim.Optimizer
    sched: object
    params: list[torch.nn.Parameter]
    dist: "Dist"
    use_hard_negatives: bool = True
    max_grad_norm: float | None = 1.0
    passage_tokens: int | None = None  # training.train_passage_tokens; None: the model's document_length
    mini_batch: int | None = None  # training.mini_batch_size: GradCache's chunk (rows); None: the whole batch at once

    def embed_queries(self, batch: list[dict]) -> tuple[torch.Tensor, int]:
        """Query embeddings, each query with its own instruction's prompt (PO pools and FT-all mix instructions in
        a batch), in one forward pass, pooled as ``encode_query`` pools it (:func:`stm.core.retriever.embed_prompted`;
        one instruction: sentence-transformers' own features). Returns (embeddings, real tokens)."""
        prompts = [R.prompt_for(self.model, r["instruction"]) for r in batch]
        if len(set(prompts)) > 1:
            return R.embed_prompted(self.model, prompts, [r["query"] for r in batch], R.QUERY)
        feats = R.features(self.model, [r["query"] for r in batch], R.QUERY, prompts[0])
        return R.embed(self.model, feats), int(feats["attention_mask"].sum())

    def embed_documents(self, batch: list[dict]) -> tuple[list[torch.Tensor], int]:
        """Positives, then hard negatives (and extra ones), in one forward pass; split back per column.
        (Queries and passages padded into one pass measured no faster: 1.45-1.74 s against 1.36-1.77 s a step.)"""
        docs = [r["positive"] for r in batch]
        if self.use_hard_negatives:
            docs += [r["negative"] for r in batch]
            if "extra_negative" in batch[0]:
                docs += [r["extra_negative"] for r in batch]
        feats = R.features(self.model, docs, R.DOCUMENT, max_length=self.passage_tokens)
        return list(R.embed(self.model, feats).split(len(batch))), int(feats["attention_mask"].sum())

    def __call__(self, batch: list[dict]) -> tuple[float, int]:
        """Forward, InfoNCE, backward, all-reduce, clip, optimizer and scheduler step: (global loss, tokens)."""
        if self.mini_batch and self.mini_batch < len(batch):
            return self.cached_step(batch)
        qe, q_tokens = self.embed_queries(batch)
        de, d_tokens = self.embed_documents(batch)
        return self.update(qe, de), (q_tokens + d_tokens) * self.dist.world

    def cached_step(self, batch: list[dict]) -> tuple[float, int]:
        """The same step with GradCache (Gao et al., 2021): the loss over the whole batch, the activations of only
        ``mini_batch`` rows at a time. Embed every chunk without a graph, take the loss's gradient with respect to
        the embeddings, then re-run each chunk with its graph (same random state) and back-propagate that gradient.
        The parameters' gradient is the whole batch's (tested against the plain step); each chunk runs twice."""
        chunks = [batch[i : i + self.mini_batch] for i in range(0, len(batch), self.mini_batch)]
        states, qs, ds, tokens = [], [], [], 0
        with torch.no_grad():
            for chunk in chunks:
                states.append(_rng_state())
                qe, qt = self.embed_queries(chunk)
                de, dt = self.embed_documents(chunk)
                qs.append(qe)
                ds.append(de)
                tokens += qt + dt
        qe = torch.cat(qs).requires_grad_()
        de = [torch.cat(col).requires_grad_() for col in zip(*ds, strict=True)]
        self.opt.zero_grad(set_to_none=False)
        loss = self.loss_fn(qe, *de)
        loss.backward()
        start = 0
        for chunk, state in zip(chunks, states, strict=True):
            _set_rng_state(state)
            rows = slice(start, start + len(chunk))
            q, _ = self.embed_queries(chunk)
            d, _ = self.embed_documents(chunk)
            torch.autograd.backward([q, *d], [qe.grad[rows], *(col.grad[rows] for col in de)])
            start += len(chunk)
        return self._apply(loss), tokens * self.dist.world

    def update(self, qe: torch.Tensor, de: list[torch.Tensor]) -> float:
        """InfoNCE on embeddings, backward, all-reduce, clip, optimizer and scheduler step; returns the global loss.

        ``benchmarks/train_gpu.py`` calls this with embeddings of random token batches."""
        loss = self.loss_fn(qe, *de)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        return self._apply(loss)

    def _apply(self, loss: torch.Tensor) -> float:
        """All-reduce the gradients, clip, step the optimizer and the schedule; the global loss."""
        _sync_grads(self.params, self.dist)
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.opt.step()
        self.sched.step()
        value = loss.detach()
        if self.dist.world > 1:  # log the global-batch loss: the mean of the per-process means
            torch.distributed.all_reduce(value)
            value = value / self.dist.world
        return value.item()


class Interrupted(RuntimeError):
    """Raised by the ``interrupt_after`` test hook to simulate a kill."""


def train(cfg: TrainingConfig, expert: str, out_dir: Path, processed: Path, interrupt_after: int | None = None,
          prompts: Path | None = None) -> TrainingRecord:
    """Train one expert (or FT-all with ``expert='all'``) on the triples of ``processed`` (and, for a PO variant, the
    prompts of the folder ``prompts``); write the adapter and its records to ``out_dir``."""
    out_dir = Path(out_dir)
    rows, data_record = load_rows(cfg, expert, processed, prompts)  # fails before any compute on bad input
    dist = init_distributed()
    if cfg.batch_size % dist.world:
        raise ValueError(f"training.batch_size {cfg.batch_size} is not divisible by {dist.world} processes")
    device = device_for(dist)
    steps = training_steps(len(rows), cfg.batch_size, cfg.max_steps, cfg.epochs, cfg.max_epochs)
    model = build_model(cfg, device)
    params = list(_trainable(model).values())
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, min(cfg.warmup_steps, steps), steps)
    loss_fn = InfoNCE(cfg.temperature, cfg.hard_negatives_in_denominator, cfg.gather_across_devices)
    order = batch_order(len(rows), cfg.batch_size, steps, cfg.seed)
    ckpt = checkpoint_dir(out_dir)
    fingerprint = sha256_text(json.dumps([expert, dist.world, dump(cfg), data_record, weights_fingerprint(cfg.backbone)],
                                         sort_keys=True, default=str))
    start, history = 0, []
    if (ckpt / "state.pt").exists():
        resumed = _load_checkpoint(ckpt, model, opt, sched, fingerprint)
        if resumed is None:
            log.warning("%s: checkpoint %s was written for another configuration or data; starting over", expert, ckpt)
        else:
            start, history = resumed
            log.info("resuming %s from step %d", expert, start)
    truncated = query_truncation(model, rows, cfg.format.max_query_tokens, cfg.seed)
    if truncated > 0.2:
        log.warning("%s: %.0f%% of queries (instruction + query) exceed max_query_tokens=%d and are cut at the end",
                    expert, 100 * truncated, cfg.format.max_query_tokens)
    local = cfg.batch_size // dist.world
    passage_tokens = min(cfg.train_passage_tokens or cfg.format.max_passage_tokens, cfg.format.max_passage_tokens)
    step_fn = Step(model, loss_fn, opt, sched, params, dist, cfg.use_hard_negatives, cfg.max_grad_norm,
                   passage_tokens, cfg.mini_batch_size)
    model.train()
    bar = tqdm(total=steps, initial=start, desc=f"train {expert}", disable=not dist.main, unit="step",
               mininterval=5)
    for step in range(start, steps):
        t0 = time.perf_counter()
        value, tokens = step_fn([rows[i] for i in order[step][dist.rank * local : (dist.rank + 1) * local]])
        dt = time.perf_counter() - t0
        if not math.isfinite(value):
            raise FloatingPointError(f"training {expert}: loss is {value} at step {step + 1}")
        history.append({"step": step + 1, "loss": round(value, 6), "lr": sched.get_last_lr()[0],
                        "tokens_per_s": round(tokens / dt, 1)})
        bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{tokens / dt:.0f}", refresh=False)
        bar.update(1)
        done = step + 1
        if dist.main and (done % cfg.checkpoint_every == 0) and done < steps:
            _save_checkpoint(ckpt, model, opt, sched, done, history, fingerprint)
        if interrupt_after is not None and done >= interrupt_after:
            raise Interrupted(f"interrupted after step {done}")
    bar.close()
    model.eval()
    record = TrainingRecord(
        expert=expert,
        backbone=cfg.backbone,
        retriever=R.describe(model),
        variant=cfg.variant_for(expert),
        steps=steps,
        world_size=dist.world,
        loss=loss_fn.get_config_dict(),
        config=dump(cfg),
        data=data_record,
        final_loss=history[-1]["loss"] if history else None,
        query_truncated_fraction=round(truncated, 4),
        mean_tokens_per_s=round(sum(h["tokens_per_s"] for h in history) / max(1, len(history)), 1),
        environment=environment_record(),
    )
    if dist.main:
        with atomic_path(out_dir / "adapter") as tmp:
            R.save(model, tmp)
        write_json(out_dir / "train_log.json", history)
        record.save(TrainingRecord.path(out_dir))
        if ckpt.exists():
            shutil.rmtree(ckpt)
    if dist.world > 1:
        torch.distributed.barrier()
    return record
