"""Figures: ours beside the paper's reported numbers, each written under a name that says what it shows."""

from __future__ import annotations

from pathlib import Path

from stm.config import GEPA_BUDGETS
from stm.core.records import Ablations, Evaluation, MainLine, MergeReport, RunInfo
from stm.figures.claims import bootstrap_mean
from stm.figures.results import EXPERT_LABELS, PAPER_BACKBONE_LABELS, paper, po_reference, provenance



def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(folder: Path, fig, name: str, dpi: int = 120, note: str = "") -> Path:
    """Write the figure into ``folder`` (the run's figures folder: ``Layout.figures``); ``note`` (``provenance()``) is
    its footnote: what the numbers are, where not the paper's."""
    import textwrap

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / name
    fig.tight_layout()
    if note:  # below the axes; the saved image grows to hold it
        fig.text(0.01, 0.0, "\n".join(textwrap.wrap(note, width=int(fig.get_figwidth() * 19))), fontsize=7,
                 color="#555555", va="top", ha="left")
    fig.savefig(out, dpi=dpi, **({"bbox_inches": "tight"} if note else {}))
    _plt().close(fig)
    return out


def run_label(run: RunInfo, record: Evaluation) -> str:
    """What a figure of this run shows: backbone and profile (the run's folders), tasks, split and query count."""
    n = record.queries
    return (f"{run.backbone} ({run.profile} profile), {len(record.scores)} tasks, "
            f"{record.split} split" + (f", {n} queries" if n else ""))


def merged_vs_experts(main: MainLine, out: Path, dpi: int = 120) -> Path:
    """Figure 2 / Table 6 analogue: experts, FT-all and every merge that ran (ours, with 95% bootstrap intervals over
    queries, BM25 and MiniLM as lines) beside the paper's three backbones; written into the folder ``out``."""
    plt = _plt()
    p = paper()
    models = main.models()
    recs = {m.label: m.record for m in models}
    merges = {m.label for m in models if m.role == "merge"}
    ours = [n for n in ("untrained backbone", *(EXPERT_LABELS[e] for e in EXPERT_LABELS)) if n in recs]
    ours += sorted(merges)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    color = {"untrained backbone": "#bdbdbd", "FT-all": "#fdae6b"}
    for i, n in enumerate(ours):
        avg = recs[n].average
        ci = bootstrap_mean(recs[n])
        err = [[avg - ci[1]], [ci[2] - avg]] if ci else None
        axes[0].bar(i, avg, yerr=err, capsize=3, color=color.get(n, "#31a354" if n in merges else "#9ecae1"))
        axes[0].text(i, (ci[2] if ci else avg) + 0.01, f"{avg:.3f}", ha="center", va="bottom", fontsize=8)
    for name, style in (("BM25", "--"), ("all-MiniLM-L6-v2", ":")):
        if name in recs:
            axes[0].axhline(recs[name].average, color="#636363", linestyle=style,
                            label=f"{name} {recs[name].average:.3f}")
    axes[0].set_xticks(range(len(ours)), ours, rotation=30, ha="right")
    axes[0].set_title(f"ours: {run_label(main.run, recs[ours[0]])}\n(error bars: 95% bootstrap CI over queries, where "
                      "per-query scores exist)", fontsize=9)
    axes[0].set_ylabel("avg nDCG@10 (test)")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8, loc="upper left")
    labels, best, ft, lin = [], [], [], []
    for b, vals in p["table6_merges"].items():
        labels.append(PAPER_BACKBONE_LABELS[b])
        best.append(vals["best_expert"]["all"])
        ft.append(vals["ft_all"]["all"])
        lin.append(vals["linear"]["all"])
    x = range(len(labels))
    for k, (series, name, c) in enumerate(((best, "best expert", "#9ecae1"), (ft, "FT-all", "#fdae6b"),
                                           (lin, "STM linear", "#31a354"))):
        axes[1].bar([i + (k - 1) * 0.27 for i in x], series, width=0.27, label=name, color=c)
    axes[1].set_xticks(list(x), labels)
    axes[1].set_ylim(axes[0].get_ylim())  # the same scale as ours, so the two panels compare
    axes[1].set_title(f"paper (Table 6), 12 MTEB tasks\n{p['citation']}", fontsize=9)
    axes[1].legend(fontsize=8)
    return _save(out, fig, "merged_vs_experts.png", dpi,
                 provenance("scores", "negatives", "search", records=[recs[n] for n in ours], merging=main.merging,
                            negatives=main.run.negatives))


def merge_weights(report: MergeReport, out: Path, dpi: int = 120) -> Path:
    """Figure 5 analogue: the chosen merge weights per expert (ours) beside the paper's reconstruction. Every weight
    is written on its bar, so a dropped expert (weight 0) shows as a 0, and TIES's densities (the share of each
    expert's delta kept) are written under its weights; the title says how many candidates the dev search scored."""
    plt = _plt()
    p = paper()["figure5_merge_weights"]
    experts = report.experts
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    methods = list(report.methods)
    width = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        chosen = report.methods[m].chosen
        xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(experts))]
        bars = axes[0].bar(xs, chosen.weights, width=width, label=m)
        for x, w, d in zip(xs, chosen.weights, chosen.densities or [None] * len(xs), strict=True):
            axes[0].text(x, w + 0.02, f"{w:g}" + (f"\nd={d:g}" if d is not None else ""), ha="center", va="bottom",
                         fontsize=7, color=bars.patches[0].get_facecolor())
    axes[0].set_xticks(range(len(experts)), [EXPERT_LABELS.get(e, e) for e in experts])
    axes[0].set_ylim(0, 1.25)
    axes[0].set_ylabel("merge weight (d: TIES density)")
    scored = ", ".join(f"{len(report.methods[m].history)} {m}" for m in methods)
    dev = report.dev_tasks
    queries = sum((d.get("sizes") or {}).get("queries", 0) for d in dev.values()) if isinstance(dev, dict) else 0
    axes[0].set_title(f"ours: weights chosen on dev ({scored} candidates scored"
                      + (f", {queries} dev queries" if queries else "") + ")", fontsize=9)
    axes[0].legend(fontsize=8)
    width = 0.13
    for j, b in enumerate(PAPER_BACKBONE_LABELS):
        for k, m in enumerate(("linear", "ties")):
            off = (j * 2 + k - 2.5) * width
            bars = axes[1].bar([i + off for i in range(4)], p[b][m], width=width,
                               label=f"{PAPER_BACKBONE_LABELS[b]} {m}")
            for i, w in enumerate(p[b][m]):
                if w == 0:  # a dropped expert: a bar of height 0 would not show
                    axes[1].text(i + off, 0.01, "0", ha="center", va="bottom", fontsize=6,
                                 color=bars.patches[0].get_facecolor())
    axes[1].set_xticks(range(4), [EXPERT_LABELS[e] for e in p["experts"]])
    axes[1].set_ylim(0, 1.25)
    axes[1].set_title("paper (Figure 5, reconstructed; densities not reported)", fontsize=9)
    axes[1].legend(fontsize=6, ncol=2)
    return _save(out, fig, "merge_weights.png", dpi, provenance("search", merging=report))


def _not_run(ax, kind: str) -> None:
    ax.text(0.5, 0.5, f"no {kind} cells run on this profile yet\n(dvc repro ablate_{kind})", ha="center", va="center",
            transform=ax.transAxes, fontsize=9, color="gray")


def variants_figure(ablations: Ablations, out: Path, dpi: int = 120) -> Path:
    """Table 4 analogue: each ablated expert trained FT / SHN / PO / SHN+PO, beside the paper's numbers."""
    plt = _plt()
    order = ("ft", "shn", "po", "shn_po")
    ours: dict[str, dict[str, Evaluation]] = {}
    for r in ablations.of("variant").values():
        ours.setdefault(r.train.expert, {})[r.train.variant] = r
    dev: dict[tuple[str, str], float] = {(r.train.expert, r.train.variant): r.average
                                         for r in ablations.of("variant", "dev").values()}
    p = paper()["table4_experts"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(1, len(ours))
    n = 0
    for k, (expert, cells) in enumerate(sorted(ours.items())):
        present = [v for v in order if v in cells]
        xs = [order.index(v) + (k - (len(ours) - 1) / 2) * width for v in present]
        means = [cells[v].average for v in present]
        ci = [bootstrap_mean(cells[v]) for v in present]  # test intervals: bootstrap over queries
        err = [[m - c[1] if c else 0 for m, c in zip(means, ci)], [c[2] - m if c else 0 for m, c in zip(means, ci)]]
        axes[0].bar(xs, means, width, yerr=err, capsize=2, label=EXPERT_LABELS.get(expert, expert))
        devs = [(x, dev[(expert, v)]) for x, v in zip(xs, present) if (expert, v) in dev]
        if devs:  # the split the main line's variant map was chosen on
            axes[0].scatter(*zip(*devs), marker="D", s=12, color="black", zorder=3,
                            label="dev (chooses the variant)" if k == 0 else None)
        n = n or cells[present[0]].queries
    axes[0].set_xticks(range(len(order)), [v.upper().replace("_", "+") for v in order])
    if not ours:
        _not_run(axes[0], "variant")
    else:
        axes[0].legend(fontsize=7, loc="lower center", ncol=3)
    axes[0].set_ylim(0, 1)
    axes[0].set_title("ours: experts by variant, test with 95% CI" + (f" ({n} queries)" if n else ""), fontsize=9)
    axes[0].set_ylabel("avg nDCG@10")
    expert = "search" if "search" in ours or not ours else sorted(ours)[0]  # the paper's Table 4 row we plot
    for b in PAPER_BACKBONE_LABELS:
        vals = [p[b][v].get(expert, p[b][v]["avg"]) for v in order]
        axes[1].plot(["FT", "SHN", "PO", "SHN+PO"], vals, marker="o", label=PAPER_BACKBONE_LABELS[b])
    axes[1].set_title(f"paper (Table 4), {EXPERT_LABELS.get(expert, expert)} expert, 12 MTEB tasks", fontsize=9)
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=8)
    return _save(out, fig, "expert_variants.png", dpi,
                 provenance("scores", "negatives", records=list(ablations.of("variant").values()),
                            negatives=ablations.run.negatives))


def training_size_figure(ablations: Ablations, out: Path, dpi: int = 120) -> Path:
    """Figure 4 analogue: FT on subsets of the union, mean and spread over seeds."""
    import statistics

    plt = _plt()
    recs = ablations.of("size")
    by_size: dict[int, list[float]] = {}
    for r in recs.values():
        by_size.setdefault(r.train.rows, []).append(r.average)
    sizes = sorted(by_size)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    means = [statistics.mean(by_size[s]) for s in sizes]
    sds = [statistics.pstdev(by_size[s]) for s in sizes]
    if sizes:
        axes[0].errorbar(sizes, means, yerr=sds, marker="o", capsize=3)
        axes[0].set_xscale("log")
    else:
        _not_run(axes[0], "size")
    axes[0].set_xlabel("training rows")
    axes[0].set_ylabel("avg nDCG@10")
    axes[0].set_ylim(0, 1)  # the same scale as the paper's panel: seed noise is not a trend
    n = next(iter(recs.values())).queries if recs else 0
    axes[0].set_title(f"ours: FT-all on subsets, mean ± sd over {len(next(iter(by_size.values()), []))} seeds"
                      + (f" ({n} test queries)" if n else ""), fontsize=9)
    p = paper()["figure4_training_size"]
    for b, label in PAPER_BACKBONE_LABELS.items():
        axes[1].plot(p["sizes"], p[b], marker="o", label=label)
    axes[1].set_xscale("log")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("paper (Figure 4), mean of 3 runs, 12 MTEB tasks", fontsize=9)
    axes[1].legend(fontsize=8)
    return _save(out, fig, "training_size.png", dpi, provenance("scores", records=list(recs.values())))


def prompt_pools_figure(ablations: Ablations, out: Path, dpi: int = 120) -> Path:
    """Table 10 analogue: ``ablations.po_expert`` (FT-all) trained with each GP-N pool and each GEPA budget's prompts,
    against the same expert trained FT at the same steps."""
    plt = _plt()
    recs = [*ablations.of("po").values(), *ablations.of("gepa").values()]
    not_run = [b for b in GEPA_BUDGETS if b in ablations.not_run("gepa")]

    def order(name: str) -> tuple[int, int]:  # gp10 < gp20 < ... < gepa-light < gepa-medium < gepa-heavy
        if name.startswith("gepa-"):
            return 1, GEPA_BUDGETS.index(name.removeprefix("gepa-"))
        return 0, int(name[2:]) if name[2:].isdigit() else 0

    by_name = {r.train.optimizer: r for r in recs}
    names = sorted(by_name, key=order)
    experts = {r.train.expert for r in recs}
    steps = {r.train.steps for r in recs}
    ref = po_reference(ablations, next(iter(experts)), next(iter(steps))) if len(experts) == len(steps) == 1 else None
    if ref is not None:
        by_name, names = {"ft": ref} | by_name, ["ft", *names]
    means = [by_name[n_].average for n_ in names]
    ci = [bootstrap_mean(by_name[n_]) for n_ in names]
    err = [[m - c[1] if c else 0 for m, c in zip(means, ci)], [c[2] - m if c else 0 for m, c in zip(means, ci)]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].bar([{"ft": "FT (no PO)"}.get(n_, n_) for n_ in names], means, yerr=err, capsize=3,
                color=["#bdbdbd" if n_ == "ft" else "#6baed6" if n_.startswith("gepa") else "#9e9ac8" for n_ in names])
    if not names:
        _not_run(axes[0], "po")
    axes[0].set_ylim(0, 1)
    axes[0].tick_params(axis="x", rotation=40)
    n = by_name[names[0]].queries if names else 0
    label = ", ".join(EXPERT_LABELS.get(e, e) for e in sorted(experts))
    axes[0].set_title(f"ours: {label} with each PO technique, test, 95% CI over {n} queries"
                      + (f"\nGEPA {', '.join(not_run)}: not run in this profile (ablations.gepa_budgets)"
                         if not_run else ""), fontsize=9)
    p = paper()["table10_prompt_optimization"]
    keys = ["ft_all", "gp10", "gp20", "gp50", "gp100", "gepa_light", "gepa_medium", "gepa_heavy"]
    for b, label in PAPER_BACKBONE_LABELS.items():
        axes[1].plot(keys, [p[b][k] for k in keys], marker="o", label=label)
    axes[1].tick_params(axis="x", rotation=40)
    axes[1].set_ylim(0, 1)
    axes[1].set_title("paper (Table 10), FT-all with each PO technique, 12 MTEB tasks", fontsize=9)
    axes[1].legend(fontsize=8)
    return _save(out, fig, "prompt_pools.png", dpi, provenance("scores", records=[by_name[n_] for n_ in names]))


def pretraining_figure(ablations: Ablations, out: Path, dpi: int = 120) -> Path:
    """Figure 3 analogue: contrastive pre-training (PT), PT then fine-tuning, and fine-tuning alone."""
    plt = _plt()
    recs = ablations.of("pretrain")
    labels = {"pt": "PT", "pt_ft": "PT+FT", "ft": "FT", "ft_matched": "FT, PT+FT's steps"}
    order = [k for k in labels if k in recs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, k in enumerate(order):
        avg, ci = recs[k].average, bootstrap_mean(recs[k])
        axes[0].bar(i, avg, yerr=[[avg - ci[1]], [ci[2] - avg]] if ci else None, capsize=3,
                    color="#fdae6b" if k == "ft_matched" else "#74c476")
        axes[0].text(i, (ci[2] if ci else avg) + 0.01, f"{avg:.3f}", ha="center", va="bottom", fontsize=8)
    axes[0].set_xticks(range(len(order)), [labels[k] for k in order])
    if not recs:
        _not_run(axes[0], "pretrain")
    n = recs[order[0]].queries if order else 0
    axes[0].set_title("ours: inverse-cloze PT on PubMed, FT on the union; orange: the compute-matched control\n"
                      f"(PT+FT trains twice as long as FT; 95% bootstrap CI over {n} test queries)", fontsize=9)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("avg nDCG@10")
    p = paper()["figure3_pretraining"]
    paper_labels = {"pt": "PT", "pt_ft": "PT+FT", "ft": "FT"}
    for b, label in PAPER_BACKBONE_LABELS.items():
        axes[1].plot(list(paper_labels.values()), [p[b][k] for k in paper_labels], marker="o", label=label)
    axes[1].set_title("paper (Figure 3): PT 10M, PT+FT 11.4M, FT 1.4M pairs", fontsize=9)
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=8)
    return _save(out, fig, "pretraining.png", dpi, provenance("scores", "pretraining", records=list(recs.values())))
