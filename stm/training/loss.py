"""InfoNCE with in-batch negatives plus one hard negative per query (paper section 3.2).

Two denominators are offered, because the paper's formula and the common implementation differ:

* ``all`` (default): every positive and every hard negative in the (global) batch is a candidate.
  This is sentence-transformers' ``MultipleNegativesRankingLoss``, which we call directly.
* ``own``: the paper's formula as written, where query i sees the in-batch positives and only its
  own hard negative. MNRL cannot express this, so it is the one piece written here; its value
  equals a hand-computed cross-entropy in the tests.

Both gather candidates across processes (with gradients) when ``torch.distributed`` is running, so
the effective batch is the global one; the loss is the mean over this process's queries, and DDP's
gradient averaging turns that into the global mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import all_gather_with_grad, get_rank
from torch import nn


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.05, hard_negatives: str = "all", gather_across_devices: bool = True):
        super().__init__()
        if hard_negatives not in ("all", "own"):
            raise ValueError(f"hard_negatives must be 'all' or 'own', got {hard_negatives!r}")
        self.temperature = temperature
        self.hard_negatives = hard_negatives
        self.gather = gather_across_devices and torch.distributed.is_available() and torch.distributed.is_initialized()
        # MNRL only uses its model argument for bookkeeping; the math is in compute_loss_from_embeddings.
        self._mnrl = MultipleNegativesRankingLoss(nn.Identity(), scale=1.0 / temperature, gather_across_devices=self.gather)

    def forward(self, q: torch.Tensor, p: torch.Tensor, *negatives: torch.Tensor) -> torch.Tensor:
        """``q``, ``p`` and each hard-negative column are (local batch, dim) tensors."""
        q, p = q.float(), p.float()
        negatives = tuple(n.float() for n in negatives)
        if self.hard_negatives == "all" or not negatives:
            return self._mnrl.compute_loss_from_embeddings([q, p, *negatives], None)
        return self._own(q, p, negatives)

    def _own(self, q: torch.Tensor, p: torch.Tensor, negatives: tuple[torch.Tensor, ...]) -> torch.Tensor:
        offset = 0
        p_all = p
        if self.gather:
            p_all = all_gather_with_grad(p)
            offset = get_rank() * q.shape[0]
        qn, pn = F.normalize(q, dim=-1), F.normalize(p_all, dim=-1)
        own = [(qn * F.normalize(n, dim=-1)).sum(-1, keepdim=True) for n in negatives]
        logits = torch.cat([qn @ pn.T, *own], dim=1) / self.temperature
        labels = torch.arange(offset, offset + q.shape[0], device=q.device)
        return F.cross_entropy(logits, labels)

    def get_config_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "scale": 1.0 / self.temperature,
            "similarity": "cosine",
            "hard_negatives": self.hard_negatives,
            "gather_across_devices": self.gather,
        }
