"""Merge methods, as a registry from our names to MergeKit configurations (mergekit 0.1.5, ``run_merge``).

* ``linear``: weighted mean of the experts, ``normalize: true`` (the paper's Model Soup).
* ``ties``: task vectors against the base, trimmed to a density, sign election (the paper's TIES).
* ``task_arithmetic`` and ``dare_ties``: as in the authors' later release.

Bad parameters (unknown method, negative weight, density outside [0, 1], experts of different
bases or tokenizers) are refused before any work, naming the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stm.io import atomic_path, read_json, sha256_file
from stm.registry import Registry


SOURCE = "merge_source.json"  # written beside each scratch full model: what it was built from, and its base


class MergeError(ValueError):
    pass


@dataclass(frozen=True)
class MergeMethod:
    name: str
    mergekit_name: str
    uses_base: bool
    uses_density: bool
    defaults: dict = field(default_factory=dict)
    in_memory: bool = False  # scored by stm/merging/inmemory.py (equal to mergekit within 1e-5); else via mergekit


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method", "merging.methods", MergeError)
for _m in (
    MergeMethod("linear", "linear", False, False, {"normalize": True}, in_memory=True),
    MergeMethod("task_arithmetic", "task_arithmetic", True, False, {"normalize": False, "lambda": 1.0}, in_memory=True),
    MergeMethod("ties", "ties", True, True, {"normalize": False, "int8_mask": True, "lambda": 1.0}, in_memory=True),
    MergeMethod("dare_ties", "dare_ties", True, True, {"normalize": False, "int8_mask": True, "lambda": 1.0}),
):
    MERGE_METHODS.register(_m.name)(_m)


def get_method(name: str) -> MergeMethod:
    return MERGE_METHODS.lookup(name)


def _tokenizer_hash(folder: Path) -> str | None:
    tok = folder / "tokenizer.json"
    return sha256_file(tok) if tok.exists() else None


def validate(method: str, experts: Sequence[Path], weights: Sequence[float],
             densities: Sequence[float] | None = None) -> MergeMethod:
    m = get_method(method)
    if len(weights) != len(experts):
        raise MergeError(f"merge weights: {len(weights)} weights for {len(experts)} experts")
    for i, w in enumerate(weights):
        if w < 0:
            raise MergeError(f"merge weights[{i}] = {w}: weights must be >= 0")
    if m.name == "linear" and sum(weights) <= 0:
        raise MergeError("merge weights: a normalized linear merge needs a positive weight sum")
    if m.uses_density:
        if densities is None or len(densities) != len(experts):
            raise MergeError(f"merge densities: {m.name} needs one density per expert")
        for i, d in enumerate(densities):
            if not 0 <= d <= 1:
                raise MergeError(f"merge densities[{i}] = {d}: densities must lie in [0, 1]")
    bases = {}
    for e in experts:
        rec_path = Path(e) / SOURCE
        if not rec_path.exists():
            raise MergeError(f"expert {e}: not a full-model folder written for merging (no {SOURCE})")
        rec = read_json(rec_path)
        bases[str(e)] = (rec.get("backbone_path"), _tokenizer_hash(Path(e)))
    if len({b for b, _ in bases.values()}) > 1:
        raise MergeError(f"experts have different base models: { {k: v[0] for k, v in bases.items()} }")
    if len({t for _, t in bases.values()}) > 1:
        raise MergeError("experts have different tokenizers; refusing to merge")
    return m


def mergekit_config(method: str, experts: Sequence[Path], weights: Sequence[float], base: Path | None,
                    densities: Sequence[float] | None = None, dtype: str = "float32") -> dict:
    m = validate(method, experts, weights, densities)
    models = []
    for i, (e, w) in enumerate(zip(experts, weights, strict=True)):
        if w == 0 and m.name != "linear":
            continue  # a zero task vector contributes nothing
        params = {"weight": float(w)}
        if m.uses_density:
            params["density"] = float(densities[i])
        models.append({"model": str(e), "parameters": params})
    cfg = {"merge_method": m.mergekit_name, "models": models, "parameters": dict(m.defaults), "dtype": dtype}
    if m.uses_base:
        if base is None:
            raise MergeError(f"merge method {m.name} needs a base model")
        cfg["base_model"] = str(base)
    return cfg


def run_mergekit(config: dict, out: Path, seed: int = 0) -> Path:
    """Run one merge with mergekit's Python entry point; the output appears only when complete.

    Seeded: DARE-TIES drops parameters at random, so the final merge is the candidate that was scored."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    with atomic_path(out) as tmp:
        run_merge(MergeConfiguration.model_validate(config), str(tmp),
                  options=MergeOptions(copy_tokenizer=True, lazy_unpickle=False, quiet=True, random_seed=seed))
    return out

