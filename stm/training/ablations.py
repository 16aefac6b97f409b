"""Ablation cells, named where the name is the same in every profile, by index where the value is the profile's.

``variant <name>`` (ft, shn, po, shn_po): each of ``ablations.variant_experts`` trained in that variant (Table 4),
scored on test and on dev (the dev scores choose the main line's per-expert variant map); its runs are
``variant/<name>/<expert>``, its records ``results/.../ablations/variant_<name>/[dev/]<expert>.json``;
``size i --seed-index j``: FT-all on ``ablations.sizes[i]`` rows with ``ablations.seeds[j]`` (Figure 4);
``po i``: ``po_expert`` (the paper: FT-all) trained with the GP-N pool of size ``prompts.gp_sizes[i]`` (Table 10).
The sizes and pools are indices because their values differ by profile (smoke: 8 rows and GP-1; the paper: 10,000
rows and GP-10) while ``dvc.yaml``'s stage names cannot (DVC's ``foreach`` cannot read the active profile's block);
each record names its value (``model.train.data.rows``, ``...prompts.optimizer``).
``gepa <budget>``: GEPA at that budget (light, medium, heavy) writes the cell's own prompt per split, then
``po_expert`` trains with them (Table 10's GEPA rows); a budget not in ``ablations.gepa_budgets`` writes a record that
says so and trains nothing, so that every profile has every declared output;
``pretrain``: PT (unlabeled pairs, in-batch negatives), PT then FT, FT alone, and FT for PT+FT's total steps (the
compute-matched control: PT+FT trains twice as long), all on ``size_expert`` data (Figure 3), run in sequence
because PT+FT starts from PT's adapter.
All cells use ``ablations.steps`` training steps (null: the training schedule), so they compare with each other.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from stm.config import (AblationsConfig, ConfigError, EvaluationConfig, MergingConfig, PromptsConfig, TrainingConfig,
                        dump, validate)
from stm.core.evaluation import evaluate_model
from stm.core.records import NotRun, size_cell
from stm.core.sampling import sample_record, selection_sets
from stm.data.pretrain import ict_pairs
from stm.io import write_json, write_jsonl
from stm.paths import Layout
from stm.prompts.optimizers import OPTIMIZERS
from stm.training.data import split_files
from stm.training.stage import Trial, result_path, run_dir, train_and_evaluate


def cell(a: AblationsConfig, gp_sizes: list[int], kind: str, index: int | str, seed_index: int = 0,
         expert: str | None = None) -> tuple[str, str, dict]:
    """(expert, run name, training overrides) of one cell; ``index``: a variant's name for ``variant``."""
    steps = {"max_steps": a.steps} if a.steps is not None else {}
    if kind == "variant":
        if index not in a.variants:
            raise ConfigError(f"ablations.variants {a.variants} does not name the variant {index!r}")
        expert = expert or a.variant_experts[0]
        return expert, f"variant/{index}/{expert}", {"variant": index, "variants": {}, **steps}
    try:
        if kind == "size":
            return a.size_expert, size_cell(index, seed_index), {
                "max_train_rows": a.sizes[index], "seed": a.seeds[seed_index], **steps}
        if kind == "po":
            n = gp_sizes[index]
            return a.po_expert, f"po/{index}", {"variant": "po", "variants": {}, "po_pool": n, **steps}
    except IndexError:
        raise ConfigError(f"ablation {kind} index {index} is out of range for profile's lists") from None
    raise ConfigError(f"unknown ablation kind {kind!r}")


def cell_evaluation(a: AblationsConfig, ecfg: EvaluationConfig) -> EvaluationConfig:
    """The evaluation settings the cells score with: ``ablations.eval_dtype`` (resolved) over ``evaluation.dtype``.
    Every cell of a run uses the same, so the cells compare with each other; the records name the dtype."""
    return ecfg if a.eval_dtype is None else ecfg.model_copy(update={"dtype": a.eval_dtype})


def with_overrides(tcfg: TrainingConfig, **overrides) -> TrainingConfig:
    """The training config of a cell, validated again (a bad override names its key)."""
    return validate("training", dump(tcfg) | overrides, source="ablation cell")


def dev_result_path(layout: Layout, name: str) -> Path:
    """A variant cell's dev-split record: ``results/.../ablations/variant_<name>/dev/<expert>.json``."""
    test = result_path(layout, "", name)
    return test.parent / "dev" / test.name


def run_cell(layout: Layout, a: AblationsConfig, tcfg: TrainingConfig, ecfg: EvaluationConfig, mcfg: MergingConfig,
             gp_sizes: list[int], kind: str, index: int | str, seed_index: int = 0) -> Trial | dict[str, Trial]:
    if kind == "variant":  # one stage per variant trains it for every expert of Table 4, in turn
        # scored on dev too, on the sets that choose the merge weights: the main line's variant map
        # (training.variants) is chosen there, never on test
        cells = [cell(a, gp_sizes, kind, index, expert=e) for e in a.variant_experts]  # a bad name fails first
        dev = selection_sets(mcfg, ecfg, layout.tasks, layout.ablations / ".variant-dev")
        out = {}
        for e, name, o in cells:
            trial = train_and_evaluate(layout, with_overrides(tcfg, **o), ecfg, e, name)
            out[e] = replace(trial, dev=evaluate_model(
                run_dir(layout, e, name) / "adapter", ecfg, name, layout.tasks, "dev", dev_result_path(layout, name),
                {"train": {"expert": trial.train.expert, "variant": trial.train.variant},
                 "dev_tasks": {t.name: sample_record(t) for t in dev}}, specs=dev))
        return out
    expert, name, overrides = cell(a, gp_sizes, kind, index, seed_index)
    return train_and_evaluate(layout, with_overrides(tcfg, **overrides), ecfg, expert, name)


def run_pretrain(layout: Layout, a: AblationsConfig, tcfg: TrainingConfig, ecfg: EvaluationConfig) -> dict[str, Trial]:
    """Figure 3: PT alone, PT then FT, FT alone, each trained ``ablations.steps`` steps, and FT for PT+FT's steps."""
    base = with_overrides(tcfg, **({"max_steps": a.steps} if a.steps is not None else {}))
    pairs = run_dir(layout, "pretrain", "pretrain") / "ict.jsonl"
    write_jsonl(pairs, ict_pairs(split_files(a.size_expert, "ft", layout.processed), base.seed))
    pt = base.model_copy(update={"train_file": str(pairs), "use_hard_negatives": False})
    pt_adapter = run_dir(layout, "pretrain", "pretrain/pt") / "adapter"
    cells = {"pt": ("pretrain", pt),
             "pt_ft": (a.size_expert, base.model_copy(update={"init_adapter": str(pt_adapter)})),
             "ft": (a.size_expert, base),
             # the control the claim is judged on: FT for as many steps as PT and FT together (one epoch each when
             # ablations.steps is null)
             "ft_matched": (a.size_expert, base.model_copy(update={"max_steps": 2 * base.max_steps}
                                                           if base.max_steps else {"epochs": 2 * base.epochs}))}
    return {name: train_and_evaluate(layout, cfg, ecfg, expert, f"pretrain/{name}")
            for name, (expert, cfg) in cells.items()}


def run_gepa(layout: Layout, a: AblationsConfig, pcfg: PromptsConfig, tcfg: TrainingConfig, ecfg: EvaluationConfig,
             budget: str, retriever) -> Trial | NotRun:
    """Table 10's GEPA row of ``budget``: GEPA (``prompts.gepa`` at that budget) writes one prompt per split to the
    cell's ``selected.json``; ``po_expert`` trains with them as the PO variant and is scored on test. ``retriever``
    builds the model GEPA scores with (the prompts stage's)."""
    name = f"gepa/{budget}"
    out, result = run_dir(layout, a.po_expert, name), result_path(layout, a.po_expert, name)
    if budget not in a.gepa_budgets:
        out.mkdir(parents=True, exist_ok=True)
        reason = f"ablations.gepa_budgets {a.gepa_budgets} does not name {budget!r}: not run in this profile"
        (out / "NOT_RUN.txt").write_text(reason + "\n", encoding="utf-8")
        record = NotRun(cell=name, not_run=reason)
        record.save(result)
        return record
    cfg = pcfg.model_copy(update={"optimizer": "gepa", "gepa": pcfg.gepa.model_copy(update={"budget": budget})})
    selected = OPTIMIZERS.lookup("gepa")(cfg, out, layout.splits_dev, retriever) | {"config": dump(cfg)}
    write_json(out / "selected.json", selected)
    steps = {"max_steps": a.steps} if a.steps is not None else {}
    overrides = {"variant": "po", "variants": {}, "prompts_file": str(out / "selected.json"), **steps}
    return train_and_evaluate(layout, with_overrides(tcfg, **overrides), ecfg, a.po_expert, name)
