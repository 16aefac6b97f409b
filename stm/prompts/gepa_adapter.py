"""GEPA over a split's query instruction, through the ``gepa`` library (no re-implementation).

The candidate is ``{"instruction": text}``, seeded with the split's own instruction (the paper's set-up). Its score on an example is the nDCG@10 of the current
retriever for that example's query, ranked against the passages of the split's held-out **dev**
rows (never a test task). The reflection LM is any generator of the registry. The budget levels
follow the paper's Table 8 (train/val examples 100/200/300, reflection minibatch 3/5/8), scaled by
the profile through ``prompts.gepa``.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from stm import paths
from stm.config import PromptsConfig
from stm.core import retriever as R
from stm.core.generators import build_generator
from stm.data.schema import read_triples
from stm.io import DataError

BUDGETS = {"light": (100, 3, 60), "medium": (200, 5, 120), "heavy": (300, 8, 240)}  # examples, minibatch, calls


def _ndcg_single(scores: torch.Tensor, gold: int, k: int = 10) -> float:
    rank = int((scores > scores[gold]).sum())
    return 1.0 / math.log2(rank + 2) if rank < k else 0.0


class RetrievalAdapter:
    """gepa's adapter protocol: ``evaluate`` and ``make_reflective_dataset``."""

    def __init__(self, model, passages: list[str]):
        self.model = model
        self.passages = passages
        with torch.inference_mode():
            self.doc_emb = F.normalize(R.encode(model, passages, R.DOCUMENT), dim=-1)

    def evaluate(self, batch, candidate, capture_traces=False):
        from gepa.core.adapter import EvaluationBatch

        instruction = candidate["instruction"]
        q = R.encode(self.model, [ex["query"] for ex in batch], R.QUERY, R.prompt_for(self.model, instruction))
        sims = F.normalize(q, dim=-1) @ self.doc_emb.T
        scores = [_ndcg_single(sims[i], ex["gold"]) for i, ex in enumerate(batch)]
        outputs = [{"top": self.passages[int(sims[i].argmax())][:200]} for i in range(len(batch))]
        traces = [{"query": ex["query"], "score": s, "top": o["top"], "gold": self.passages[ex["gold"]][:200]}
                  for ex, s, o in zip(batch, scores, outputs, strict=True)] if capture_traces else None
        return EvaluationBatch(outputs=outputs, scores=scores, trajectories=traces)

    def make_reflective_dataset(self, candidate, eval_batch, components_to_update):
        rows = [{"Inputs": t["query"], "Generated Outputs": f"top passage: {t['top']}",
                 "Feedback": f"nDCG@10 = {t['score']:.2f}. The relevant passage was: {t['gold']}"}
                for t in eval_batch.trajectories or []]
        return {c: rows for c in components_to_update}


def seed_instruction(cfg: PromptsConfig, rows: list[dict]) -> str:
    """GEPA's starting prompt: the split's own instruction, as the paper seeds it (its most frequent one in the
    data: "Given a web search query, retrieve relevant passages that answer the query" for MS MARCO), or a
    literal prompt given as ``prompts.gepa.seed``."""
    if cfg.gepa.seed != "data":
        return cfg.gepa.seed
    return Counter(r["instruction"] for r in rows).most_common(1)[0][0]


def optimize_split(cfg: PromptsConfig, split: str, out: Path, model) -> tuple[str, list[dict]]:
    """GEPA for one split's instruction, scored with ``model`` (a ``SentenceTransformer`` retriever)."""
    import gepa

    n_examples, minibatch, calls = BUDGETS[cfg.gepa.budget]
    n_examples = cfg.gepa.train_examples or n_examples
    minibatch = cfg.gepa.reflection_minibatch_size or minibatch
    calls = cfg.gepa.max_metric_calls or calls
    dev_file = paths.PROCESSED / "splits_dev" / f"{split}.jsonl"
    rows = read_triples(dev_file)
    if len(rows) < 2 * n_examples:  # the paper's train and validation sets are disjoint and equally sized
        raise DataError(f"{dev_file}: GEPA ({cfg.gepa.budget}) needs {n_examples} train + {n_examples} validation "
                        f"examples, found {len(rows)} dev rows; raise data.dev_rows or set prompts.gepa.train_examples")
    seed = seed_instruction(cfg, rows)
    rng = random.Random(cfg.seed)
    rows = rng.sample(rows, 2 * n_examples)
    passages = [r["positive"] for r in rows] + [r["negative"] for r in rows]
    examples = [{"query": r["query"], "gold": i} for i, r in enumerate(rows)]
    half = len(examples) // 2
    adapter = RetrievalAdapter(model, passages)
    gen = build_generator(cfg.generator)
    result = gepa.optimize(
        seed_candidate={"instruction": seed}, trainset=examples[:half], valset=examples[half:],
        adapter=adapter, reflection_lm=lambda prompt: gen.generate([prompt])[0] or "",
        reflection_minibatch_size=minibatch, max_metric_calls=calls, seed=cfg.seed,
        run_dir=str(out / "gepa_runs" / split), display_progress_bar=True, raise_on_exception=False,
    )
    history = [{"instruction": c["instruction"], "val_score": s}
               for c, s in zip(result.candidates, result.val_aggregate_scores, strict=True)]
    return result.best_candidate["instruction"], history
