"""Ablation cells, addressed by index so that ``dvc.yaml`` stays the same in every profile.

``variant i``: the ablated expert trained as ``ablations.variants[i]`` (Table 4);
``size i --seed-index j``: FT-all on ``ablations.sizes[i]`` rows with ``ablations.seeds[j]`` (Figure 4);
``po i``: the ablated expert trained with the GP-N pool of size ``prompts.gp_sizes[i]`` (Table 10).
All cells use ``ablations.steps`` training steps, so they compare with each other.
"""

from __future__ import annotations

from stm import config
from stm.training.stage import train_and_evaluate


def cell(kind: str, index: int, seed_index: int = 0) -> tuple[str, str, dict]:
    """(expert, run name, training overrides) of one cell."""
    a = config.load("ablations")
    try:
        if kind == "variant":
            return a.variant_expert, f"variant/{index}", {"variant": a.variants[index], "max_steps": a.steps}
        if kind == "size":
            return a.size_expert, f"size/{index}-{seed_index}", {
                "max_train_rows": a.sizes[index], "seed": a.seeds[seed_index], "max_steps": a.steps}
        if kind == "po":
            n = config.load("prompts").gp_sizes[index]
            return a.variant_expert, f"po/{index}", {"variant": "po", "po_pool": n, "max_steps": a.steps}
    except IndexError:
        raise config.ConfigError(f"ablation {kind} index {index} is out of range for profile's lists") from None
    raise config.ConfigError(f"unknown ablation kind {kind!r}")


def run_cell(kind: str, index: int, seed_index: int = 0) -> dict:
    expert, name, overrides = cell(kind, index, seed_index)
    return train_and_evaluate(config.load("training", **overrides), expert, name)
