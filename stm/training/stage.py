"""The training stage: train one expert (or FT-all) and score it on the test tasks."""

from __future__ import annotations

import shutil
from pathlib import Path

from stm import paths
from stm.config import EvaluationConfig, MergingConfig, TrainingConfig
from stm.core.cards import model_card
from stm.core.evaluation import evaluate_model
from stm.training.launch import processes, train_launched
from stm.training.train import train


def run_dir(expert: str, name: str | None = None) -> Path:
    """Main-line experts live in ``artifacts/experts/<expert>``; named (ablation) runs elsewhere."""
    return paths.ABLATIONS / name if name else paths.EXPERTS / expert


def train_merge_variants(cfg: TrainingConfig, mcfg: MergingConfig, expert: str) -> dict[str, dict]:
    """Train ``expert`` in each variant a merge method takes in place of this stage's own (Table 6's footnote:
    Phi-4-mini's Linear merge used Med-Real PO). Not scored on test: the merge that uses it is. Trained in a scratch
    folder beside the stage's output, so that its checkpoints survive an interruption, then moved in."""
    records = {}
    for variant in mcfg.merge_variants(expert):
        if variant == cfg.variant_for(expert):
            continue
        c = cfg.model_copy(update={"variant": variant, "variants": {}})
        scratch = paths.EXPERTS / f".{expert}-variants" / variant
        n = processes(c)
        records[variant] = train_launched(c, expert, scratch, n) if n > 1 else train(c, expert, scratch)
        dst = paths.expert_variant(expert, variant)
        shutil.rmtree(dst, ignore_errors=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(scratch, dst)
    return records


def result_path(expert: str, name: str | None = None) -> Path:
    """``results/experts/<expert>.json``; an ablation ``kind/index[/expert]`` -> ``results/ablations/kind_index[/expert].json``."""
    if not name:
        return paths.RESULTS / "experts" / f"{expert}.json"
    return paths.RESULTS / "ablations" / f"{name.replace('/', '_', 1)}.json"


def train_and_evaluate(cfg: TrainingConfig, ecfg: EvaluationConfig, expert: str, name: str | None = None,
                       evaluate: bool = True, out: Path | None = None, result: Path | None = None) -> dict:
    """Train ``expert`` and score it on test. Outputs: the main line's (no ``name``), a named ablation run's, or the
    folder ``out`` with its record at ``result`` (the CLI's scratch runs, which touch no DVC output)."""
    out = Path(out) if out is not None else run_dir(expert, name)
    n = processes(cfg)
    record = train_launched(cfg, expert, out, n) if n > 1 else train(cfg, expert, out)
    if not evaluate:
        return {"train": record}
    label = name or expert
    result = evaluate_model(out / "adapter", ecfg, label, out=result or result_path(expert, name),
                            extra={"train": {k: record[k] for k in ("steps", "final_loss", "query_truncated_fraction", "mean_tokens_per_s",
                                                                     "data", "variant", "expert")}})
    c, lora = record["config"], record["config"]["lora"]
    where = f"the top {lora['layers']} layers" if lora["layers"] else "every layer"
    (out / "adapter" / "README.md").write_text(model_card(
        f"STM expert: {expert} ({record['variant']})", result,
        [f"**Training**: LoRA r={lora['r']} alpha={lora['alpha']} on {lora['target_modules']} of {where}, InfoNCE "
         f"(temperature {c['temperature']}, in-batch negatives + one hard negative), {record['steps']} steps of "
         f"{c['batch_size']} triples at learning rate {c['learning_rate']:g}, seed {c['seed']}; final loss "
         f"{record['final_loss']}"],
        [f"`{f}` (sha256 {h[:12]}…)" for f, h in record["data"]["files"].items()]
        + ([f"prompts: {record['data']['prompts']['optimizer']}"] if record["data"].get("prompts") else [])))
    return {"train": record, "eval": result}
