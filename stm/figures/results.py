"""Our result records, and the paper's numbers (``data/paper_results.yaml``), as tables.

The paper's numbers are averages over its 12 MTEB tasks with 0.6B-3.8B backbones; ours are averages over the
embedded PubMed tasks with a 135M backbone, so the comparison is of patterns (which model wins), not values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import yaml

from stm import paths
from stm.core.records import EXPERT_LABELS, Ablations, Evaluation, MainLine, MergeReport

if TYPE_CHECKING:
    import pandas

PAPER_BACKBONE_LABELS = {"qwen3-0.6b": "Qwen3-0.6B", "gemma-2b": "Gemma-2B", "phi4-mini": "Phi4-mini"}
__all__ = ["EXPERT_LABELS", "PAPER_BACKBONE_LABELS", "baselines_table", "main_table", "paper", "po_reference",
           "provenance"]


def paper() -> dict:
    return yaml.safe_load(paths.PAPER_RESULTS.read_text())


def main_table(main: MainLine) -> "pandas.DataFrame":
    """nDCG@10 per embedded task and average: baselines, backbone, FT-all, experts, merges."""
    import pandas as pd

    table = {m.label: {**{t: s["ndcg_at_10"] for t, s in m.record.scores.items()}, "avg": m.record.average}
             for m in main.models()}
    return pd.DataFrame(table).T.round(3)


def baselines_table(main: MainLine) -> "pandas.DataFrame":
    """Table 7 analogue: our baselines and models beside the paper's averages."""
    import pandas as pd

    ours = main_table(main)["avg"].rename("ours: avg nDCG@10 (embedded tasks)")
    theirs = pd.Series({k: v["all"] for k, v in paper()["table7_baselines"].items()},
                       name="paper: avg nDCG@10 (12 MTEB tasks)")
    return pd.concat([ours, theirs], axis=1)


def po_reference(ablations: Ablations, expert: str, steps: int) -> Evaluation | None:
    """Table 10's first row: ``expert`` trained FT for ``steps`` (the PO cells'), from a Table 4 cell, else from
    Figure 3's FT cell when it trained the same expert."""
    cells = [*ablations.of("variant").values(), *[r for k, r in ablations.of("pretrain").items() if k == "ft"]]
    return next((r for r in cells if (r.train.variant, r.train.expert, r.train.steps) == ("ft", expert, steps)), None)


AUTHORS_MTEB = "1.38.1"  # the mteb the authors' release (TIO-IKIM/STM) pins
PAPER_NEGATIVES = "gpt-4.1"  # the paper's hard-negative generator (section 3.1)


def provenance(*kinds: str, records: Sequence[Evaluation] = (), merging: MergeReport | None = None,
               negatives: str | None = None) -> str:
    """What a figure's numbers are, where they differ from the paper's (a figure's footnote), from the records it
    draws: ``scores`` (the mteb that scored ``records``), ``search`` (the merge weights of ``merging``: the whole
    grid or a seeded sample of it), ``negatives`` (who wrote the hard negatives: ``RunInfo.negatives``),
    ``pretraining`` (Figure 3's pre-training task)."""
    notes = []
    if "scores" in kinds and records:
        v = records[0].environment.get("mteb")
        notes.append(f"scored with mteb {v} (the authors: {AUTHORS_MTEB})" if v else "")
    if "search" in kinds and merging is not None:
        s, n = merging.search, len(merging.experts)
        for method, entry in merging.methods.items():
            size = (len(s["alphas"]) ** n - 1) * (len(s["densities"]) ** n if entry.chosen.densities else 1)
            scored = len(entry.history)
            notes.append(f"{method} weights: the best of {scored} dev-scored points of the {size:,}-point grid "
                         + ("(all of it)" if scored >= size else f"({s['strategy']}, seed {s['seed']}; "
                                                                               "the paper: a grid search, exhaustive or not unstated)"))
    if "negatives" in kinds and negatives:
        kind, _, name = negatives.partition(":")
        who = {"released": f"the authors' released GPT-5 negatives ({name})"}.get(kind, f"{name} ({kind})")
        notes.append(f"hard negatives: {who}" + ("" if name == PAPER_NEGATIVES else f"; the paper: {PAPER_NEGATIVES}'s"))
    if "pretraining" in kinds:
        notes.append("pre-training: inverse cloze on the fine-tuning positives (the paper: BMRetriever's 10M "
                     "unlabeled pairs)")
    return "; ".join(n for n in notes if n)
