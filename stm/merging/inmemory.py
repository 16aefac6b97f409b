"""Score linear and task-arithmetic merges without writing models: W = W0 + sum_k c_k * s_k * B_k A_k.

Writing a merged model and re-encoding is what makes merge search slow. Experts are LoRA adapters
on one base, so a linear (normalized) merge equals the base plus the normalized weighted sum of the
low-rank deltas, and task arithmetic is the same sum with raw weights. We keep the LoRA factors
(tiny) and rebuild only the touched weight matrices per candidate. Equality with MergeKit's output
for the same weights is tested to 1e-5.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from stm.core import retriever as R


def lora_factors(adapter: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{base weight name: (A, B, scale)} from an expert folder (its peft adapter files)."""
    adapter = Path(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / (r**0.5) if cfg.get("use_rslora") else alpha / r
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    out = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        name = key.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
        out[name] = (a.float(), b.float(), scale)
    if not out:
        raise ValueError(f"{adapter}: no LoRA weights found")
    return out


class DeltaMerger:
    """A base model whose LoRA-touched weights are rebuilt for each candidate's coefficients."""

    def __init__(self, experts: Sequence[Path], dtype: str = "float32"):
        base_path = json.loads((Path(experts[0]) / "adapter_config.json").read_text())["base_model_name_or_path"]
        self.model: SentenceTransformer = R.load(experts[0], dtype)
        base = AutoModel.from_pretrained(base_path, dtype=R.DTYPES[dtype], attn_implementation="sdpa")
        R.with_decoder(self.model, base.eval())
        self.factors = [lora_factors(a) for a in experts]
        params = dict(base.named_parameters())
        names = set().union(*self.factors)
        missing = names - set(params)
        if missing:
            raise ValueError(f"adapter weights not in the base model: {sorted(missing)[:3]} ...")
        self.params = {n: params[n] for n in names}
        self.base = {n: p.detach().float().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def apply(self, coefficients: Sequence[float]) -> SentenceTransformer:
        if len(coefficients) != len(self.factors):
            raise ValueError(f"{len(coefficients)} coefficients for {len(self.factors)} experts")
        for name, p in self.params.items():
            w = self.base[name].clone()
            for c, f in zip(coefficients, self.factors, strict=True):
                if c and name in f:
                    a, b, s = f[name]
                    w.add_(b @ a, alpha=c * s)
            p.copy_(w.to(p.dtype))
        return self.model


def coefficients(method: str, weights: Sequence[float]) -> list[float]:
    """Per-expert delta coefficients of an in-memory merge."""
    if method == "linear":
        total = sum(weights)
        if total <= 0:
            raise ValueError("a normalized linear merge needs a positive weight sum")
        return [w / total for w in weights]
    if method == "task_arithmetic":
        return list(weights)
    raise ValueError(f"merge method {method!r} cannot be reproduced in memory")
