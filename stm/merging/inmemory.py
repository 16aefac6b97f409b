"""Score merges without writing models: only the LoRA-touched weight matrices are rebuilt per candidate.

Writing a merged model and re-encoding is what makes merge search slow. Experts are LoRA adapters on one base,
so a linear (normalized) merge equals the base plus the normalized weighted sum of the low-rank deltas,
W = W0 + sum_k c_k * s_k * B_k A_k, and task arithmetic is the same sum with raw weights. TIES works on the same
task vectors, each expert's (W0 + s_k B_k A_k) - W0 as mergekit sees it: trimmed to its density by magnitude,
signs elected by the weighted sum, the agreeing entries summed (mergekit's own ``sparsify`` and ``get_mask``). Every
weight no adapter touches has a zero task vector, so it stays W0 bit for bit, which is what lets the frozen-prefix
cache serve every candidate. Equality with mergekit's output for the same weights is tested to 1e-5.

Measured before this port (committed run, 30 layers): a TIES candidate through mergekit took 171 s against 107 s
for a Linear one in memory; 64 s of the difference was writing and reading five full fp32 models.

Why not peft's ``add_weighted_adapter(combination_type="cat")``, which gives the same Linear ΔW (measured by
``benchmarks/library_parts.py``, the committed Linear weights of the four experts): equal to 7.3e-6 on 431 dev
passages, but the candidate embeds in 35.4 s against 23.4 s here (its forward runs the four concatenated adapters
unmerged) and builds in 0.92 s against 0.24 s; and TIES, trimming and electing signs on the dense ΔW, is not a
concatenation of low-rank factors (peft's own ``ties`` re-factorizes it by SVD, which is not mergekit's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from stm.core import retriever as R
from stm.merging.methods import MergeMethod


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


def magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """mergekit's ``magnitude`` sparsification (TIES' trim: keep the ``density`` share of entries largest in
    magnitude), by a threshold instead of mergekit's full ``argsort``: the same entries whenever the k-th largest
    magnitude is not tied, and mergekit's own function when it is. 10-15 ms against 80 ms for a 1536 x 576 matrix
    (2-core AMD EPYC Zen 4, 2026-12-06); with it a 12-layer TIES candidate took 27-28 s against Linear's 20-21 s in
    that machine's merge stages (before: 45.2 s against 25.9 s on an Intel Xeon, mostly this sort)."""
    from mergekit.sparsify import SparsificationMethod, sparsify

    n = delta.numel()
    if density >= 1 or density <= 0 or n == 0:
        return sparsify(delta, density=density, method=SparsificationMethod.magnitude)
    k = max(1, int(density * n))
    w = delta.abs().reshape(-1).float()
    keep = w >= torch.kthvalue(w, n - k + 1).values
    if int(keep.sum()) != k:  # ties at the threshold: which of them mergekit keeps is its sort's choice
        return sparsify(delta, density=density, method=SparsificationMethod.magnitude)
    return delta * keep.reshape_as(delta).to(delta.dtype)


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
        # the decoder layers below every adapter: unchanged by any merge (the frozen prefix, stm/core/prefix.py)
        layers = [int(m.group(1)) for n in names if (m := re.search(r"(?:^|\.)layers\.(\d+)\.", n))]
        self.frozen_layers = min(layers) if layers else 0

    def merge(self, method: MergeMethod, weights: Sequence[float],
              densities: Sequence[float] | None = None) -> SentenceTransformer:
        """The retriever of one candidate of an in-memory method, with mergekit's parameters for it."""
        if not method.in_memory:
            raise ValueError(f"merge method {method.name!r} cannot be reproduced in memory")
        params = method.defaults
        if method.uses_density:
            return self.ties(weights, densities, params["normalize"], params["lambda"])
        if params["normalize"]:  # linear: mergekit's weighted mean
            if sum(weights) <= 0:
                raise ValueError("a normalized linear merge needs a positive weight sum")
            return self.apply([w / sum(weights) for w in weights])
        return self.apply([w * params["lambda"] for w in weights])  # task arithmetic

    @torch.no_grad()
    def ties(self, weights: Sequence[float], densities: Sequence[float], normalize: bool = False,
             lam: float = 1.0) -> SentenceTransformer:
        """mergekit's ``ties`` (``int8_mask``, ``normalize`` and ``lambda`` as given) on the touched matrices."""
        from mergekit.merge_methods.generalized_task_arithmetic import get_mask

        if len(weights) != len(self.factors) or len(densities) != len(self.factors):
            raise ValueError(f"{len(weights)} weights, {len(densities)} densities for {len(self.factors)} experts")
        keep = [k for k, w in enumerate(weights) if w != 0]  # mergekit's config leaves zero-weight experts out
        for name, p in self.params.items():
            w0 = self.base[name]
            rows = [k for k in keep if name in self.factors[k]]
            if not rows:
                p.copy_(w0.to(p.dtype))
                continue
            deltas = w0.new_empty((len(rows), *w0.shape))
            for i, k in enumerate(rows):
                a, b, s = self.factors[k][name]
                full = w0 + (b @ a) * s  # the expert's weight as peft folds it in (save_full_model)
                deltas[i] = magnitude(full - w0, densities[k])
            wt = torch.tensor([weights[k] for k in rows], dtype=deltas.dtype)
            while wt.dim() < deltas.dim():
                wt.unsqueeze_(-1)
            deltas.mul_(wt)
            mask = get_mask(deltas, method="sum", mask_dtype=torch.int8)
            mixed = (deltas * mask).sum(dim=0)
            if normalize:
                divisor = (wt * mask).sum(dim=0)
                divisor[divisor == 0] = 1
                mixed /= divisor
            if lam != 1:
                mixed *= lam
            p.copy_((w0 + mixed).to(p.dtype))
        return self.model

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
