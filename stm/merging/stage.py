"""The merging stage as DVC runs it: the configured experts' adapters in, merges and ``results/merging.json`` out."""

from __future__ import annotations

from stm import paths
from stm.config import EvaluationConfig, MergingConfig
from stm.io import DataError
from stm.merging.run import run


def expert_adapters(mcfg) -> dict:
    adapters = {e: paths.EXPERTS / e / "adapter" for e in mcfg.experts}
    missing = [str(p) for p in adapters.values() if not (p / "adapter_config.json").exists()]
    if missing:
        raise DataError(f"merging: expert adapters missing ({', '.join(missing)}); run the training stages")
    return adapters


def run_stage(mcfg: MergingConfig, ecfg: EvaluationConfig) -> dict:
    return run(mcfg, ecfg, expert_adapters(mcfg))
