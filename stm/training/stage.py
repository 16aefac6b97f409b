"""The training stage: train one expert (or FT-all) and score it on the test tasks."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from stm.config import EvaluationConfig, MergingConfig, TrainingConfig
from stm.core import retriever as R
from stm.core.cards import model_card
from stm.core.evaluation import evaluate_model
from stm.core.records import Evaluation, TrainingRecord
from stm.paths import Layout
from stm.training.launch import processes, train_launched
from stm.training.train import train


@dataclass(frozen=True)
class Trial:
    """One training and, unless skipped, its test record (and a variant cell's dev record)."""

    train: TrainingRecord
    test: Evaluation | None = None
    dev: Evaluation | None = None


def run_dir(layout: Layout, expert: str, name: str | None = None) -> Path:
    """Main-line experts live in ``artifacts/<profile>/<backbone>/experts/<expert>``; named (ablation) runs in
    ``.../ablations/<name>``."""
    return layout.ablation_dir(name) if name else layout.expert_dir(expert)


def _train(layout: Layout, cfg: TrainingConfig, expert: str, out: Path) -> TrainingRecord:
    """One training on the run's data and prompts, in as many processes as ``training.processes`` asks."""
    n = processes(cfg)
    if n > 1:
        return train_launched(cfg, expert, out, n, layout.processed, layout.prompts)
    return train(cfg, expert, out, layout.processed, prompts=layout.prompts)


def train_merge_variants(layout: Layout, cfg: TrainingConfig, mcfg: MergingConfig,
                         expert: str) -> dict[str, TrainingRecord]:
    """Train ``expert`` in each variant a merge method takes in place of this stage's own (Table 6's footnote:
    Phi-4-mini's Linear merge used Med-Real PO). Not scored on test: the merge that uses it is. Trained in a scratch
    folder beside the stage's output, so that its checkpoints survive an interruption, then moved in."""
    records = {}
    for variant in mcfg.merge_variants(expert):
        if variant == cfg.variant_for(expert):
            continue
        c = cfg.model_copy(update={"variant": variant, "variants": {}})
        scratch = layout.experts / f".{expert}-variants" / variant
        records[variant] = _train(layout, c, expert, scratch)
        dst = layout.expert_variant(expert, variant)
        shutil.rmtree(dst, ignore_errors=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(scratch, dst)
    return records


def result_path(layout: Layout, expert: str, name: str | None = None) -> Path:
    """``results/.../experts/<expert>.json``; an ablation ``kind/cell[/expert]`` -> ``results/.../ablations/kind_cell[/expert].json``."""
    return Evaluation.path(layout, "cell", name) if name else Evaluation.path(layout, "expert", expert)


def train_and_evaluate(layout: Layout, cfg: TrainingConfig, ecfg: EvaluationConfig, expert: str,
                       name: str | None = None, evaluate: bool = True, out: Path | None = None,
                       result: Path | None = None) -> Trial:
    """Train ``expert`` and score it on test. Outputs: the main line's (no ``name``), a named ablation run's, or the
    folder ``out`` with its record at ``result`` (the CLI's scratch runs, which touch no DVC output)."""
    out = Path(out) if out is not None else run_dir(layout, expert, name)
    record = _train(layout, cfg, expert, out)
    if not evaluate:
        return Trial(record)
    label = name or expert
    R.record_dtype(out / "adapter", ecfg.dtype)  # the folder loads as it is scored
    result = evaluate_model(out / "adapter", ecfg, label, layout.tasks, out=result or result_path(layout, expert, name),
                            extra={"train": record.summary()})
    c, lora = record.config, record.config["lora"]
    where = f"the top {lora['layers']} layers" if lora["layers"] else "every layer"
    (out / "adapter" / "README.md").write_text(model_card(
        f"STM expert: {expert} ({record.variant})", result,
        [f"**Training**: LoRA r={lora['r']} alpha={lora['alpha']} on {lora['target_modules']} of {where}, InfoNCE "
         f"(temperature {c['temperature']}, in-batch negatives + one hard negative), {record.steps} steps of "
         f"{c['batch_size']} triples at learning rate {c['learning_rate']:g}, seed {c['seed']}; final loss "
         f"{record.final_loss}"],
        [f"`{f}` (sha256 {h[:12]}…)" for f, h in record.data["files"].items()]
        + ([f"prompts: {record.data['prompts']['optimizer']}"] if record.data.get("prompts") else [])))
    return Trial(record, result)
