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

from stm.config import ConfigError, PromptsConfig
from stm.core import retriever as R
from stm.core.generators import build_generator
from stm.data.schema import read_triples
from stm.io import DataError

BUDGETS = {"light": (100, 3), "medium": (200, 5), "heavy": (300, 8)}  # Table 8: examples, reflection minibatch
AUTO_CANDIDATES = {"light": 6, "medium": 12, "heavy": 18}  # DSPy's GEPA auto levels: candidates to propose


def auto_metric_calls(budget: str, valset_size: int, predictors: int = 1, minibatch: int = 35,
                      full_eval_every: int = 5) -> int:
    """Metric calls for a budget level, by DSPy's ``GEPA.auto_budget`` rule (the paper ran GEPA through DSPy's
    ``auto``): the seed's full validation, 5 bootstrap trials per candidate, the trials' minibatches, and a full
    validation every ``full_eval_every`` trials. Medium, one predictor, 200 validation examples: 1,690 calls; the
    old fixed 60/120/240 were below the validation set's size, so gepa scored the seed and stopped."""
    n = AUTO_CANDIDATES[budget]
    trials = int(max(2 * (predictors * 2) * math.log2(n), 1.5 * n))
    total = valset_size + n * 5 + trials * minibatch
    fulls = (trials + 1) // full_eval_every + 1 + (1 if trials < full_eval_every else 0)
    return total + fulls * valset_size


def _ndcg_single(scores: torch.Tensor, gold: int, k: int = 10) -> float:
    rank = int((scores > scores[gold]).sum())
    return 1.0 / math.log2(rank + 2) if rank < k else 0.0


class RetrievalAdapter:
    """gepa's adapter protocol: ``evaluate`` and ``make_reflective_dataset``.

    ``propose_new_texts = None``: gepa's own reflective proposer. The protocol declares it with that default, but
    gepa 0.1.4 reads the attribute off the adapter, so without it every proposal failed and GEPA returned its seed."""

    propose_new_texts = None

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


def optimize_split(cfg: PromptsConfig, split: str, out: Path, dev: Path, model) -> tuple[str, list[dict]]:
    """GEPA for one split's instruction, tuned on the held-out triples ``dev/<split>.jsonl``, scored with ``model``
    (a ``SentenceTransformer`` retriever)."""
    import gepa

    n_examples, minibatch = BUDGETS[cfg.gepa.budget]
    n_examples = cfg.gepa.train_examples or n_examples
    minibatch = cfg.gepa.reflection_minibatch_size or minibatch
    calls = cfg.gepa.max_metric_calls or auto_metric_calls(cfg.gepa.budget, n_examples)
    if calls <= n_examples:  # gepa scores the seed on the whole validation set first, then would stop
        raise ConfigError(f"prompts.gepa.max_metric_calls: {calls} calls do not exceed the {n_examples} validation "
                          "examples, so GEPA would return its seed unchanged; raise it, or set it to null (DSPy's "
                          "auto rule)")
    dev_file = Path(dev) / f"{split}.jsonl"
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
