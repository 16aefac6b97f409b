"""The paper's claims, judged on our results with their uncertainty: holds, does not hold, or inconclusive.

A comparison of two models is a paired bootstrap over queries: queries are resampled within each task (the
same draw for both models), the statistic is the difference of the task-averaged nDCG@10, and the verdict
reads the 95% interval: above zero "holds", below zero "does not hold", across zero "inconclusive at this
scale". The per-query scores are mteb's nDCG@10, query by query (``per_query_ndcg_at_10`` in every record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING


from stm.core.records import Ablations, Evaluation, MainLine
from stm.core.stats import bootstrap_mean, paired_bootstrap  # noqa: F401 - the claims' statistics, re-exported
from stm.figures.results import EXPERT_LABELS, PAPER_BACKBONE_LABELS, paper, po_reference

if TYPE_CHECKING:
    import pandas

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


def _row(claim: str, a_name: str, a: Evaluation | None, b_name: str, b: Evaluation | None,
         negate: bool = False) -> dict:
    """One claim 'a > b' (or, with ``negate``, the paper's claim that a is *not* better than b)."""
    test = paired_bootstrap(a, b) if a is not None and b is not None else None
    if test is None:
        return {"claim": claim, "compared": f"{a_name} vs {b_name}", "verdict": "not measured (no per-query scores)"}
    verdict = test["verdict"]
    if negate:  # the paper says a does not beat b: that holds unless a is significantly better
        verdict = {"holds": "does not hold", "does not hold": "holds", "inconclusive": "inconclusive"}[verdict]
    return {"claim": claim, "compared": f"{a_name} vs {b_name}", "diff": test["diff"], "ci95": test["ci95"],
            "verdict": verdict, "queries": test["queries"]}


def main_line_claims(main: MainLine) -> list[dict]:
    """The main line's claims (Figure 2, Table 6): merges vs experts and FT-all, Linear vs TIES, dropped experts."""
    merges = main.of("merge")
    experts = sorted(main.of("expert"), key=lambda e: list(EXPERT_LABELS).index(e.name) if e.name in EXPERT_LABELS
                     else len(EXPERT_LABELS))  # the paper's order
    ft_all, backbone = main.one("ft_all"), main.one("backbone")
    rows = []
    if experts:
        best = max(experts, key=lambda e: e.record.average)
        for m in merges:
            rows.append(_row("merged > best expert", m.label, m.record, best.label, best.record))
            rows.append(_row("merged > FT-all", m.label, m.record, "FT-all", ft_all and ft_all.record))
        for e in experts:
            rows.append(_row("expert > untrained backbone", e.label, e.record, "untrained backbone",
                             backbone and backbone.record))
    by_method = {m.name: m for m in merges}
    if {"linear", "ties"} <= set(by_method):
        lin, ties = by_method["linear"], by_method["ties"]
        rows.append(_row("Linear >= TIES", lin.label, lin.record, ties.label, ties.record))
    if main.merging is not None and main.merging.methods:
        report = main.merging
        best_method = max(report.methods, key=lambda k: report.methods[k].chosen.score)  # chosen on dev, not test
        weights = report.methods[best_method].weights(report.experts)  # by name: never a position assumed
        dropped = [EXPERT_LABELS.get(e, e) for e, w in weights.items() if w == 0]
        rows.append({"claim": "the best merge drops an expert", "compared": f"{by_method[best_method].label} (best on dev)",
                     "verdict": "holds" if dropped else "does not hold",
                     "detail": f"weights {list(weights.values())}" + (f", drops {dropped}" if dropped else "")})
    return rows


def ablation_claims(ablations: Ablations) -> list[dict]:
    """Table 4 (SHN, PO vs FT) and Figure 3 (pre-training) on the ablation cells."""
    by_expert: dict[str, dict[str, Evaluation]] = {}
    for r in ablations.of("variant").values():
        by_expert.setdefault(r.train.expert, {})[r.train.variant] = r
    pre = ablations.of("pretrain")
    rows = [_row(f"{v.upper()} >= FT ({expert})", v.upper(), variants.get(v), "FT", variants.get("ft"))
            for expert, variants in sorted(by_expert.items()) for v in ("shn", "po")]
    # judged against FT for the same total steps (PT+FT trains twice as long as the FT cell)
    control = "ft_matched" if "ft_matched" in pre else "ft"
    rows.append(_row("pre-training does not help (PT+FT not above FT, same steps)", "PT+FT", pre.get("pt_ft"),
                     "FT (PT+FT's steps)" if control == "ft_matched" else "FT", pre.get(control), negate=True))
    for r in [*ablations.of("po").values(), *ablations.of("gepa").values()]:  # Table 10
        t = r.train
        rows.append(_row(TABLE10_CLAIM, t.optimizer, r, EXPERT_LABELS.get(t.expert, t.expert),
                         po_reference(ablations, t.expert, t.steps), negate=True))
    return rows


def variant_map(ablations: Ablations) -> list[dict]:
    """Table 4 on **dev**: per expert, each variant's dev nDCG@10 and the variant the main line should train.

    The choice is the best dev average, FT on a tie, so a variant whose synthetic negatives or prompts lose on dev
    leaves the expert at FT; the paired bootstrap of the choice against FT (dev queries) says how sure it is.
    Test scores are shown beside, never used to choose."""
    dev, test = ablations.of("variant", "dev"), ablations.of("variant")
    by_expert: dict[str, dict[str, tuple[Evaluation, Evaluation | None]]] = {}
    for key, r in dev.items():
        by_expert.setdefault(r.train.expert, {})[r.train.variant] = (r, test.get(key))
    rows = []
    for expert, cells in sorted(by_expert.items()):
        order = [v for v in ("ft", "shn", "po", "shn_po") if v in cells]  # FT first: it wins ties
        chosen = max(order, key=lambda v: round(cells[v][0].average, 4))
        vs_ft = paired_bootstrap(cells[chosen][0], cells["ft"][0]) if chosen != "ft" and "ft" in cells else None
        rows.append({"expert": expert, **{f"dev {v}": round(cells[v][0].average, 4) for v in order},
                     "chosen on dev": chosen,
                     "chosen - FT, dev [95% CI]": (f"{vs_ft['diff']:+.3f} [{vs_ft['ci95'][0]:+.3f}, "
                                                   f"{vs_ft['ci95'][1]:+.3f}] {vs_ft['verdict']}") if vs_ft else "",
                     **{f"test {v}": round(cells[v][1].average, 4) for v in order if cells[v][1]}})
    return rows


def claims_table(rows: list[dict]) -> "pandas.DataFrame":
    """Claims rows (``main_line_claims()``, ``ablation_claims()``) as a table with the paper's Δ beside ours."""
    import pandas as pd

    table = pd.DataFrame(rows)
    table.insert(1, "paper Δ (Qwen3 / Gemma / Phi-4)", [paper_delta(r) for r in rows])
    return table
