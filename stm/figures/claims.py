"""The paper's claims, judged on our results with their uncertainty: holds, does not hold, or inconclusive.

A comparison of two models is a paired bootstrap over queries: queries are resampled within each task (the
same draw for both models), the statistic is the difference of the task-averaged nDCG@10, and the verdict
reads the 95% interval: above zero "holds", below zero "does not hold", across zero "inconclusive at this
scale". The per-query scores are mteb's nDCG@10, query by query (``per_query_ndcg_at_10`` in every record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stm.core.stats import bootstrap_mean, paired_bootstrap  # noqa: F401 - the claims' statistics, re-exported
from stm.figures.results import (EXPERT_LABELS, PAPER_BACKBONE_LABELS, ablation_records, model_records, paper,
                                 po_reference)
from stm.paths import Layout

if TYPE_CHECKING:
    import pandas

EXPERTS = ("Med-Real", "Med-Synth", "Search", "NLU")

# The paper's difference of average nDCG@10 over its 12 tasks for the same claim, Qwen3-0.6B / Gemma-2B / Phi-4-mini:
# Table 6 (merges against the best expert, FT-all and each other), Table 4 (Search expert variants against FT) and
# Figure 3 (pre-training). Keyed by the claim and, for the merges, the method.
PAPER_DELTA = {
    ("merged > best expert", "linear"): "+0.022 / +0.009 / +0.024",
    ("merged > best expert", "ties"): "+0.021 / +0.006 / +0.021",
    ("merged > FT-all", "linear"): "+0.017 / +0.022 / +0.025",
    ("merged > FT-all", "ties"): "+0.016 / +0.019 / +0.022",
    ("Linear >= TIES", None): "+0.001 / +0.003 / +0.003",
    ("PO >= FT (search)", None): "+0.060 / +0.064 / +0.117",
    ("SHN >= FT (search)", None): "+0.051 / +0.005 / +0.094",
    ("pre-training does not help (PT+FT not above FT, same steps)", None): "-0.004 / -0.012 / -0.024",
    ("the best merge drops an expert", None): "each backbone's best merge drops one",
}


TABLE10_CLAIM = "a PO technique does not help (Table 10)"


def paper_delta(row: dict) -> str:
    """The paper's Δ for one claims-table row ('' where the paper reports none, e.g. expert vs backbone)."""
    if row["claim"] == TABLE10_CLAIM:  # FT-all with the technique minus FT-all, per backbone
        t10 = paper()["table10_prompt_optimization"]
        key = row["compared"].split(" vs ")[0].replace("-", "_")
        return " / ".join(f"{t10[b][key] - t10[b]['ft_all']:+.3f}" for b in PAPER_BACKBONE_LABELS) if key in t10[
            "qwen3-0.6b"] else ""
    method = next((m for m in ("linear", "ties") if row.get("compared", "").lower().startswith(f"stm {m}")), None)
    return PAPER_DELTA.get((row["claim"], method), PAPER_DELTA.get((row["claim"], None), ""))


def _row(claim: str, a_name: str, a: dict | None, b_name: str, b: dict | None, negate: bool = False) -> dict:
    """One claim 'a > b' (or, with ``negate``, the paper's claim that a is *not* better than b)."""
    test = paired_bootstrap(a, b) if a is not None and b is not None else None
    if test is None:
        return {"claim": claim, "compared": f"{a_name} vs {b_name}", "verdict": "not measured (no per-query scores)"}
    verdict = test["verdict"]
    if negate:  # the paper says a does not beat b: that holds unless a is significantly better
        verdict = {"holds": "does not hold", "does not hold": "holds", "inconclusive": "inconclusive"}[verdict]
    return {"claim": claim, "compared": f"{a_name} vs {b_name}", "diff": test["diff"], "ci95": test["ci95"],
            "verdict": verdict, "queries": test["queries"]}


def main_line_claims(layout: Layout) -> list[dict]:
    """The main line's claims (Figure 2, Table 6): merges vs experts and FT-all, Linear vs TIES, dropped experts."""
    recs = model_records(layout)
    merges = {k: v for k, v in recs.items() if k.startswith("STM ")}
    experts = {k: recs[k] for k in EXPERTS if k in recs}
    rows = []
    if experts:
        best = max(experts, key=lambda k: experts[k]["averages"]["all"])
        for m, r in merges.items():
            rows.append(_row("merged > best expert", m, r, best, experts[best]))
            rows.append(_row("merged > FT-all", m, r, "FT-all", recs.get("FT-all")))
        for e, r in experts.items():
            rows.append(_row("expert > untrained backbone", e, r, "untrained backbone", recs.get("untrained backbone")))
    if {"STM linear", "STM ties"} <= set(merges):
        rows.append(_row("Linear >= TIES", "STM linear", merges["STM linear"], "STM ties", merges["STM ties"]))
    if merges:
        best_merge = max(merges, key=lambda k: merges[k]["merge"]["score"])  # chosen on dev, not test
        weights = merges[best_merge]["merge"]["weights"]
        names = [EXPERT_LABELS.get(e, e) for e in merges[best_merge]["merge"]["experts"]]
        dropped = [e for e, w in zip(names, weights, strict=True) if w == 0]
        rows.append({"claim": "the best merge drops an expert", "compared": f"{best_merge} (best on dev)",
                     "verdict": "holds" if dropped else "does not hold",
                     "detail": f"weights {weights}" + (f", drops {dropped}" if dropped else "")})
    return rows


def ablation_claims(layout: Layout) -> list[dict]:
    """Table 4 (SHN, PO vs FT) and Figure 3 (pre-training) on the ablation cells."""
    by_expert: dict[str, dict[str, dict]] = {}
    for r in ablation_records(layout, "variant").values():
        by_expert.setdefault(r["model"]["train"]["expert"], {})[r["model"]["train"]["variant"]] = r
    pre = {k.removeprefix("pretrain_"): v for k, v in ablation_records(layout, "pretrain").items()}
    rows = [_row(f"{v.upper()} >= FT ({expert})", v.upper(), variants.get(v), "FT", variants.get("ft"))
            for expert, variants in sorted(by_expert.items()) for v in ("shn", "po")]
    # judged against FT for the same total steps (PT+FT trains twice as long as the FT cell)
    control = "ft_matched" if "ft_matched" in pre else "ft"
    rows.append(_row("pre-training does not help (PT+FT not above FT, same steps)", "PT+FT", pre.get("pt_ft"),
                     "FT (PT+FT's steps)" if control == "ft_matched" else "FT", pre.get(control), negate=True))
    for r in [*ablation_records(layout, "po").values(), *ablation_records(layout, "gepa").values()]:  # Table 10
        t = r["model"]["train"]
        rows.append(_row(TABLE10_CLAIM, t["data"]["prompts"]["optimizer"], r, EXPERT_LABELS.get(t["expert"], t["expert"]),
                         po_reference(layout, t["expert"], t["steps"]), negate=True))
    return rows


def variant_map(layout: Layout) -> list[dict]:
    """Table 4 on **dev**: per expert, each variant's dev nDCG@10 and the variant the main line should train.

    The choice is the best dev average, FT on a tie, so a variant whose synthetic negatives or prompts lose on dev
    leaves the expert at FT; the paired bootstrap of the choice against FT (dev queries) says how sure it is.
    Test scores are shown beside, never used to choose."""
    dev, test = ablation_records(layout, "variant", "dev"), ablation_records(layout, "variant")
    by_expert: dict[str, dict[str, tuple[dict, dict | None]]] = {}
    for key, r in dev.items():
        t = r["model"]["train"]
        by_expert.setdefault(t["expert"], {})[t["variant"]] = (r, test.get(key))
    rows = []
    for expert, cells in sorted(by_expert.items()):
        order = [v for v in ("ft", "shn", "po", "shn_po") if v in cells]  # FT first: it wins ties
        chosen = max(order, key=lambda v: round(cells[v][0]["averages"]["all"], 4))
        vs_ft = paired_bootstrap(cells[chosen][0], cells["ft"][0]) if chosen != "ft" and "ft" in cells else None
        rows.append({"expert": expert, **{f"dev {v}": round(cells[v][0]["averages"]["all"], 4) for v in order},
                     "chosen on dev": chosen,
                     "chosen - FT, dev [95% CI]": (f"{vs_ft['diff']:+.3f} [{vs_ft['ci95'][0]:+.3f}, "
                                                   f"{vs_ft['ci95'][1]:+.3f}] {vs_ft['verdict']}") if vs_ft else "",
                     **{f"test {v}": round(cells[v][1]["averages"]["all"], 4) for v in order if cells[v][1]}})
    return rows


def claims_table(rows: list[dict]) -> "pandas.DataFrame":
    """Claims rows (``main_line_claims()``, ``ablation_claims()``) as a table with the paper's Δ beside ours."""
    import pandas as pd

    table = pd.DataFrame(rows)
    table.insert(1, "paper Δ (Qwen3 / Gemma / Phi-4)", [paper_delta(r) for r in rows])
    return table
