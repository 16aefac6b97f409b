"""Hard-negative mining: sample one negative from a first-stage retriever's top-k.

The positive and its near-duplicates (same source id, or nearly the same text) are excluded, which
guards against the "mined negative is really a false negative" failure seen in FlagEmbedding #850.
Miners form a registry: ``bm25`` (bm25s, as in the paper's BM25 baseline) and ``minilm``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from stm.core.assets import asset_dir
from stm.core.retriever import default_device
from stm.core.sampling import bm25_topk
from stm.registry import Registry


MINERS: Registry[Callable[[Sequence[str], Sequence[str], int], np.ndarray]] = Registry("miner", "data.miner")


MINERS.register("bm25")(bm25_topk)


@MINERS.register("minilm")
def minilm_topk(corpus: Sequence[str], queries: Sequence[str], k: int) -> np.ndarray:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(asset_dir("minilm")), device=default_device())
    c = model.encode(list(corpus), convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
    q = model.encode(list(queries), convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
    return torch.topk(q @ c.T, k=min(k, len(corpus)), dim=1).indices.cpu().numpy()


def _words(text: str) -> set[str]:
    return set(text.lower().split())


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def mine_negatives(
    queries: Sequence[str],
    positive_idx: Sequence[int],
    corpus: Sequence[str],
    corpus_ids: Sequence[str],
    miner: str = "bm25",
    k: int = 30,
    seed: int = 13,
    near_duplicate: float = 0.8,
) -> list[int]:
    """Return, per query, the corpus index of one sampled hard negative."""
    top = MINERS.lookup(miner)(corpus, queries, k + 1)
    rng = random.Random(seed)
    out = []
    for i, pos in enumerate(positive_idx):
        pos_words = _words(corpus[pos])
        cands = [
            int(j)
            for j in top[i]
            if int(j) != pos
            and corpus_ids[int(j)] != corpus_ids[pos]
            and _jaccard(_words(corpus[int(j)]), pos_words) < near_duplicate
        ]
        if not cands:  # fall back to a random non-positive passage
            cands = [j for j in rng.sample(range(len(corpus)), min(len(corpus), 10)) if j != pos]
        out.append(rng.choice(cands[:k]))
    return out
