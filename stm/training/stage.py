"""The training stage: train one expert (or FT-all) and score it on the test tasks."""

from __future__ import annotations

from pathlib import Path

from stm import paths
from stm.config import EvaluationConfig, TrainingConfig
from stm.core.evaluation import evaluate_model
from stm.training.launch import processes, train_launched
from stm.training.train import train


def run_dir(expert: str, name: str | None = None) -> Path:
    """Main-line experts live in ``artifacts/experts/<expert>``; named (ablation) runs elsewhere."""
    return paths.ABLATIONS / name if name else paths.EXPERTS / expert


def result_path(expert: str, name: str | None = None) -> Path:
    """``results/experts/<expert>.json``; an ablation ``kind/index[/expert]`` -> ``results/ablations/kind_index[/expert].json``."""
    if not name:
        return paths.RESULTS / "experts" / f"{expert}.json"
    return paths.RESULTS / "ablations" / f"{name.replace('/', '_', 1)}.json"


def train_and_evaluate(cfg: TrainingConfig, ecfg: EvaluationConfig, expert: str, name: str | None = None,
                       evaluate: bool = True) -> dict:
    out = run_dir(expert, name)
    n = processes(cfg)
    record = train_launched(cfg, expert, out, n) if n > 1 else train(cfg, expert, out)
    if not evaluate:
        return {"train": record}
    label = name or expert
    result = evaluate_model(out / "adapter", ecfg, label, out=result_path(expert, name),
                            extra={"train": {k: record[k] for k in ("steps", "final_loss", "query_truncated_fraction", "mean_tokens_per_s",
                                                                     "data", "variant", "expert")}})
    return {"train": record, "eval": result}
