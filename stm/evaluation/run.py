"""Stage entry points for evaluation: baselines, trained models, and dev scoring for merge search."""

from __future__ import annotations

from pathlib import Path

from stm import paths
from stm.config import EvaluationConfig, dump
from stm.evaluation import encoders
from stm.evaluation.harness import evaluate, save
from stm.evaluation.tasks import TaskSpec, resolve


def task_specs(cfg: EvaluationConfig, split: str | None = None, root: Path | None = None) -> list[TaskSpec]:
    return [resolve(t, split or cfg.split, root) for t in cfg.tasks]


def run_baselines(cfg: EvaluationConfig, out: Path | None = None) -> dict:
    """BM25 (bm25s) and all-MiniLM-L6-v2 on the test tasks: ``results/baselines.json``."""
    specs = task_specs(cfg)
    records = {}
    for name in cfg.baselines:
        enc = encoders.BASELINES[name]()
        records[name] = evaluate(enc, specs, cfg.split, {"name": name, "kind": "baseline"})
    table = {"split": cfg.split, "baselines": records}
    save(table, out or paths.RESULTS / "baselines.json")
    return table


def decoder_encoder(source: str | Path, cfg: EvaluationConfig, name: str | None = None):
    from stm.training.export import load_retriever

    from stm.training.export import RECORD

    trained = (Path(str(source)) / RECORD).exists()  # trained models carry their own format; bare backbones use cfg's
    retriever, record = load_retriever(source, fmt=None if trained else cfg.format, dtype=cfg.dtype)
    record = record | {"format": retriever.fmt.model_dump(), "eval_dtype": cfg.dtype,
                       "padding_side": retriever.tokenizer.padding_side,
                       "eos_appended": retriever.tokenizer("a")["input_ids"][-1] == retriever.tokenizer.eos_token_id}
    return encoders.DecoderEncoder(retriever, name or Path(str(source)).name, record, cfg.batch_size), record


def evaluate_model(source: str | Path, cfg: EvaluationConfig, name: str, split: str | None = None,
                   out: Path | None = None, extra: dict | None = None) -> dict:
    """Evaluate an adapter, a merged folder or a bare backbone on the configured tasks."""
    enc, record = decoder_encoder(source, cfg, name)
    result = evaluate(enc, task_specs(cfg, split), split or cfg.split, record | {"name": name} | (extra or {}))
    result["evaluation_config"] = dump(cfg)
    if out is not None:
        save(result, out)
    return result


def dev_score(result: dict, ndcg_weight: float) -> float:
    """The merge-selection score: w * nDCG@10 + (1 - w) * Recall@10, averaged over dev tasks."""
    vals = [ndcg_weight * s["ndcg_at_10"] + (1 - ndcg_weight) * s["recall_at_10"] for s in result["scores"].values()]
    return round(sum(vals) / len(vals), 5)
