"""Our result records, and the paper's numbers (``data/paper_results.yaml``), as tables.

The paper's numbers are averages over its 12 MTEB tasks with 0.6B-3.8B backbones; ours are averages over the
embedded PubMed tasks with a 135M backbone, so the comparison is of patterns (which model wins), not values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from stm import paths
from stm.io import read_json
from stm.paths import Layout

if TYPE_CHECKING:
    import pandas

PAPER_BACKBONE_LABELS = {"qwen3-0.6b": "Qwen3-0.6B", "gemma-2b": "Gemma-2B", "phi4-mini": "Phi4-mini"}
EXPERT_LABELS = {"med_real": "Med-Real", "med_synth": "Med-Synth", "search": "Search", "nlu": "NLU", "all": "FT-all"}
BASELINE_LABELS = {"bm25": "BM25", "minilm": "all-MiniLM-L6-v2"}


def paper() -> dict:
    return yaml.safe_load(paths.PAPER_RESULTS.read_text())


def load_results(folder: Path) -> dict[str, dict]:
    """{name: evaluation record} for every result JSON in a folder."""
    return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))}


def model_records(layout: Layout) -> dict[str, dict]:
    """{label: evaluation record} of every main-line model of the run ``layout``: baselines (the profile's: every
    backbone shares them), backbone, experts, FT-all, each merge."""
    rows = {}
    if layout.baselines.exists():
        for name, r in read_json(layout.baselines)["baselines"].items():
            rows[BASELINE_LABELS.get(name, name)] = r
    if layout.backbone_record.exists():
        rows["untrained backbone"] = read_json(layout.backbone_record)
    for name, r in load_results(layout.expert_results).items():
        rows[EXPERT_LABELS.get(name, name)] = r
    if layout.merging_record.exists():
        report = read_json(layout.merging_record)
        for method, entry in report["methods"].items():  # the weights in merging.experts' order, named with them
            rows[f"STM {method}"] = entry["test"] | {"merge": entry["chosen"] | {"experts": report["experts"]}}
    return rows


def main_table(layout: Layout) -> "pandas.DataFrame":
    """nDCG@10 per embedded task and average: baselines, backbone, experts, FT-all, merges."""
    import pandas as pd

    table = {name: {**{t: s["ndcg_at_10"] for t, s in r["scores"].items()}, "avg": r["averages"]["all"]}
             for name, r in model_records(layout).items()}
    return pd.DataFrame(table).T.round(3)


def baselines_table(layout: Layout) -> "pandas.DataFrame":
    """Table 7 analogue: our baselines and models beside the paper's averages."""
    import pandas as pd

    ours = main_table(layout)["avg"].rename("ours: avg nDCG@10 (embedded tasks)")
    theirs = pd.Series({k: v["all"] for k, v in paper()["table7_baselines"].items()},
                       name="paper: avg nDCG@10 (12 MTEB tasks)")
    return pd.concat([ours, theirs], axis=1)


def ablation_records(layout: Layout, kind: str, split: str = "test", not_run: bool = False) -> dict[str, dict]:
    """{cell: record} of the ablation cells of one kind; a variant cell is ``variant_<name>/<expert>``.
    ``split="dev"``: the variant cells' dev-split records (``variant_<name>/dev/<expert>.json``), under the same keys. Cells the profile
    does not run (a GEPA budget outside ``ablations.gepa_budgets``) only with ``not_run=True``."""
    folder = layout.ablation_results
    recs = {}
    for p in sorted(folder.rglob("*.json")):
        key = str(p.relative_to(folder).with_suffix(""))
        if ("/dev/" in key) == (split == "dev"):
            recs[key.replace("/dev/", "/")] = read_json(p)
    return {k: v for k, v in recs.items() if k.startswith(kind) and (not_run or "not_run" not in v)}


def po_reference(layout: Layout, expert: str, steps: int) -> dict | None:
    """Table 10's first row: ``expert`` trained FT for ``steps`` (the PO cells'), from a Table 4 cell, else from
    Figure 3's FT cell when it trained the same expert."""
    pre = ablation_records(layout, "pretrain")
    cells = [*ablation_records(layout, "variant").values(), *([pre["pretrain_ft"]] if "pretrain_ft" in pre else [])]
    return next((r for r in cells if (r["model"]["train"]["variant"], r["model"]["train"]["expert"],
                                      r["model"]["train"]["steps"]) == ("ft", expert, steps)), None)




AUTHORS_MTEB = "1.38.1"  # the mteb the authors' release (TIO-IKIM/STM) pins
PAPER_NEGATIVES = "gpt-4.1"  # the paper's hard-negative generator (section 3.1)


def provenance(layout: Layout, *kinds: str) -> str:
    """What a figure's numbers are, where they differ from the paper's, from the run's own records (a figure's
    footnote): ``scores`` (the mteb that scored them), ``search`` (the merge weights: the whole grid or a seeded
    sample of it), ``negatives`` (who wrote the hard negatives), ``pretraining`` (Figure 3's pre-training task)."""
    notes = []
    if "scores" in kinds and layout.backbone_record.exists():
        v = read_json(layout.backbone_record).get("environment", {}).get("mteb")
        notes.append(f"scored with mteb {v} (the authors: {AUTHORS_MTEB})" if v else "")
    if "search" in kinds and layout.merging_record.exists():
        report = read_json(layout.merging_record)
        s, n = report["search"], len(report["experts"])
        for method, entry in report["methods"].items():
            size = (len(s["alphas"]) ** n - 1) * (len(s["densities"]) ** n if entry["chosen"].get("densities") else 1)
            scored = len(entry["history"])
            notes.append(f"{method} weights: the best of {scored} dev-scored points of the {size:,}-point grid "
                         + ("(all of it)" if scored >= size else f"({s['strategy']}, seed {s['seed']}; "
                                                                               "the paper: a grid search, exhaustive or not unstated)"))
    if "negatives" in kinds and layout.synthesis_record.exists():
        gen = read_json(layout.synthesis_record).get("generator", "")
        kind, _, name = gen.partition(":")
        who = {"released": f"the authors' released GPT-5 negatives ({name})"}.get(kind, f"{name} ({kind})")
        notes.append(f"hard negatives: {who}" + ("" if name == PAPER_NEGATIVES else f"; the paper: {PAPER_NEGATIVES}'s"))
    if "pretraining" in kinds:
        notes.append("pre-training: inverse cloze on the fine-tuning positives (the paper: BMRetriever's 10M "
                     "unlabeled pairs)")
    return "; ".join(n for n in notes if n)
