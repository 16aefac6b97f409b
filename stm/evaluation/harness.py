"""``evaluate(encoder, tasks)``: nDCG@10 and Recall@10 per task through mteb, plus the paper's averages.

The returned record holds everything that moves the numbers: the model record (id, revision,
adapter, pooling, padding side, EOS, templates), each task's instruction and data hash, the split,
and the library versions. It is what gets written to ``results/*.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from stm.evaluation.tasks import TaskSpec, resolve, to_mteb
from stm.io import environment_record, write_json

log = logging.getLogger(__name__)
METRICS = ("ndcg_at_10", "recall_at_10")


def averages(scores: dict[str, dict[str, float]], groups: dict[str, str], metric: str = "ndcg_at_10") -> dict:
    """Unweighted means over tasks, as the paper reports them: medical, general and all."""
    out = {}
    for name, members in (("medical", "medical"), ("general", "general"), ("all", None)):
        vals = [s[metric] for t, s in scores.items() if members is None or groups.get(t) == members]
        if vals:
            out[name] = round(sum(vals) / len(vals), 5)
    return out


def evaluate(encoder, tasks: Sequence[str | TaskSpec], split: str = "test", model_record: dict | None = None,
             task_root: Path | None = None) -> dict:
    import mteb

    specs = [t if isinstance(t, TaskSpec) else resolve(t, split, task_root) for t in tasks]
    scores = {}
    for spec in specs:
        result = mteb.evaluate(encoder, to_mteb(spec), cache=None, show_progress_bar=False,
                               overwrite_strategy="always")
        split_scores = result.task_results[0].scores[spec.split]
        # mteb reports one entry per hf_subset; average them (one for every embedded task)
        scores[spec.name] = {m: round(sum(s[m] for s in split_scores) / len(split_scores), 5) for m in METRICS}
        log.info("%s %s: nDCG@10 %.4f", getattr(encoder, "mteb_model_meta", None) and encoder.mteb_model_meta.name,
                 spec.name, scores[spec.name]["ndcg_at_10"])
    groups = {s.name: s.group for s in specs}
    return {
        "model": model_record or {"name": encoder.mteb_model_meta.name},
        "split": split,
        "tasks": {s.name: s.record() for s in specs},
        "scores": scores,
        "averages": averages(scores, groups),
        "recall_averages": averages(scores, groups, "recall_at_10"),
        "environment": environment_record() | {"mteb": mteb.__version__},
    }


def save(record: dict, path: Path | str) -> Path:
    return write_json(path, record)
