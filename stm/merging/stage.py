"""The merging stage as DVC runs it: the configured experts' adapters in, merges and ``results/merging.json`` out."""

from __future__ import annotations

from pathlib import Path

from stm.config import EvaluationConfig, MergingConfig
from stm.core.records import MergeReport, TrainingRecord
from stm.io import DataError
from stm.merging.run import run
from stm.paths import Layout


def expert_adapters(layout: Layout, mcfg: MergingConfig, method: str | None = None) -> dict[str, Path]:
    """{expert: adapter} that ``method`` merges: each training stage's own, or the variant ``merging.variants`` names
    for the method, which the same stage trained beside it (``experts/<expert>/variants/<variant>``)."""
    overrides = mcfg.variants.get(method, {}) if method else {}
    adapters = {}
    for e in mcfg.experts:
        main = layout.expert_dir(e)
        record = TrainingRecord.path(main)
        own = TrainingRecord.load(record).variant if record.exists() else None
        v = overrides.get(e)
        adapters[e] = main / "adapter" if v is None or v == own else layout.expert_variant(e, v) / "adapter"
    missing = [str(p) for p in adapters.values() if not (p / "adapter_config.json").exists()]
    if missing:
        raise DataError(f"merging: expert adapters missing ({', '.join(missing)}); run the training stages")
    return adapters


def run_stage(layout: Layout, mcfg: MergingConfig, ecfg: EvaluationConfig) -> MergeReport:
    """The run's experts merged into ``layout.merged``, the report into ``MergeReport.path(layout)``."""
    by_method = {m: expert_adapters(layout, mcfg, m) for m in mcfg.methods if m in mcfg.variants}
    return run(mcfg, ecfg, expert_adapters(layout, mcfg), layout.tasks, layout.merged, MergeReport.path(layout),
               method_adapters=by_method)
