"""GEPA over a split's query instruction, through the ``gepa`` library (no re-implementation).

The candidate is ``{"instruction": text}``. Its score on an example is the nDCG@10 of the current
retriever for that example's query, ranked against the passages of the split's held-out **dev**
rows (never a test task). The reflection LM is any generator of the registry. The budget levels
follow the paper's Table 8 (train/val examples 100/200/300, reflection minibatch 3/5/8), scaled by
the profile through ``prompts.gepa``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from stm import paths
from stm.config import PromptsConfig
from stm.core import retriever as R
from stm.core.generators import build_generator
from stm.core.tasks import SPLIT_INSTRUCTIONS
from stm.data.schema import read_triples

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


def optimize_split(cfg: PromptsConfig, split: str, out: Path, model) -> tuple[str, list[dict]]:
    """GEPA for one split's instruction, scored with ``model`` (a ``SentenceTransformer`` retriever)."""
    import gepa

    n_examples, minibatch, calls = BUDGETS[cfg.gepa.budget]
    n_examples = cfg.gepa.train_examples or n_examples
    minibatch = cfg.gepa.reflection_minibatch_size or minibatch
    calls = cfg.gepa.max_metric_calls or calls
    rows = read_triples(paths.PROCESSED / "splits_dev" / f"{split}.jsonl")
    rng = random.Random(cfg.seed)
    rows = rng.sample(rows, min(len(rows), 2 * n_examples))
    passages = [r["positive"] for r in rows] + [r["negative"] for r in rows]
    examples = [{"query": r["query"], "gold": i} for i, r in enumerate(rows)]
    half = len(examples) // 2
    adapter = RetrievalAdapter(model, passages)
    gen = build_generator(cfg.generator)
    result = gepa.optimize(
        seed_candidate={"instruction": SPLIT_INSTRUCTIONS[split]}, trainset=examples[:half], valset=examples[half:],
        adapter=adapter, reflection_lm=lambda prompt: gen.generate([prompt])[0] or "",
        reflection_minibatch_size=minibatch, max_metric_calls=calls, seed=cfg.seed,
        run_dir=str(out / "gepa_runs" / split), display_progress_bar=True, raise_on_exception=False,
    )
    history = [{"instruction": c["instruction"], "val_score": s}
               for c, s in zip(result.candidates, result.val_aggregate_scores, strict=True)]
    return result.best_candidate["instruction"], history
