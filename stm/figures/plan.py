"""What a run will cost before it starts: ``python -m stm plan``.

For the paper and rehearsal profiles, each stage's GPU-hours, GPU memory and disk, estimated from

- the training throughput and peak memory measured on an H200 with the paper's backbone shapes and batch
  (``benchmarks/results/train_gpu.json``, ``benchmarks/train_gpu.py``: LoRA on every layer, bf16, gradient
  checkpointing, 64-token queries and 256-token passages);
- the rows per split (the data stage's ``data_stats.json`` when it has run, else Table 2's sizes);
- each task's size from mteb's own descriptive statistics (documents, queries, characters), offline;
- the merge search's candidates and dev samples, and the ablation cells, from the active configuration.

Forward-only encoding is counted at 3x the training tokens/s (a training step with gradient checkpointing runs
about four forwards' worth of work per token). Token counts are upper bounds: every text at its length cap
(``format.max_*_tokens``), or its characters / 4 when shorter. For the embedded and smoke profiles (CPU) the plan
is the measured run: ``benchmarks/results/pipeline_embedded_*.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stm import paths
from stm.config import EXPERTS, SPLIT_NAMES
from stm.core.tasks import mteb_splits
from stm.data.bmretriever import PAPER_SIZES

ENCODE_VS_TRAIN = 3.0  # forward-only tokens/s over training tokens/s (see the module docstring)
CHARS_PER_TOKEN = 4.0
# parameters of the released checkpoints (model cards), for the disk of full-model merge inputs and outputs (bf16)
PARAMS = {"qwen3-0.6b": 0.6e9, "gemma-2b": 2.5e9, "phi4-mini": 3.8e9, "smollm2": 0.135e9}
BYTES_PER_PARAM = 2


@dataclass(frozen=True)
class Line:
    stage: str
    gpu_hours: float
    memory_gb: float | None
    disk_gb: float
    note: str


def measured(backbone: str) -> dict:
    path = paths.ROOT / "benchmarks" / "results" / "train_gpu.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    shapes = record.get("shapes", {})
    key = backbone if backbone in shapes else None
    if key is None:  # a stand-in or a cut: the preset whose name it carries, else the smallest measured
        key = next((k for k in shapes if k in backbone), "smollm2-135m" if "smollm2-135m" in shapes else None)
    if key is None:
        raise FileNotFoundError(f"{path}: no measured throughput; run benchmarks/train_gpu.py on a GPU")
    run = shapes[key]["ours_paper_batch"]
    return {"shape": key, "tokens_per_s": run["tokens_per_s"], "memory_gb": run["peak_memory_gb"],
            "device": record.get("device", "GPU")}


def _split_rows(stats_file: Path) -> dict[str, int]:
    if stats_file.exists():
        sizes = json.loads(stats_file.read_text()).get("split_sizes") or {}
        if set(sizes) >= set(SPLIT_NAMES):
            return {s: int(sizes[s]) for s in SPLIT_NAMES}
    return dict(PAPER_SIZES)


def _task_tokens(names: list[str], split: str, max_query: int, max_passage: int) -> tuple[float, int]:
    """(upper-bound tokens to encode, number of documents) of one evaluation on ``names``, from mteb's statistics."""
    import mteb

    tokens, docs = 0.0, 0
    for name in names:
        stats = mteb.get_task(name).metadata.descriptive_stats or {}
        wanted = [s for s in mteb_splits(name, split) if s in stats] or list(stats)[:1]
        for s in wanted[:1]:  # the corpus is shared by a task's splits and subsets: count it once
            st = stats[s]
            d, q = st.get("documents_text_statistics") or {}, st.get("queries_text_statistics") or {}
            n_docs = d.get("unique_texts") or 0
            n_q = st.get("num_samples", 0) - n_docs
            tokens += n_docs * min(max_passage, d.get("average_text_length", 0) / CHARS_PER_TOKEN)
            tokens += max(n_q, 0) * min(max_query, q.get("average_text_length", 0) / CHARS_PER_TOKEN + 32)
            docs += n_docs
    return tokens, docs


def plan(stats_file: Path, tcfg, ecfg, mcfg, acfg, pcfg) -> list[Line]:
    """One line per stage of the paper DAG (and the ablations target) for the active backbone; the split sizes from
    the data stage's ``stats_file`` when it ran (``Layout.data_stats``), else Table 2's."""
    m = measured(tcfg.backbone)
    train_tps, encode_tps = m["tokens_per_s"], m["tokens_per_s"] * ENCODE_VS_TRAIN
    fmt = tcfg.format
    rows = _split_rows(stats_file)
    rows["all"] = sum(rows.values())
    per_row = fmt.max_query_tokens + 2 * (tcfg.train_passage_tokens or fmt.max_passage_tokens)

    def train_hours(n_rows: int, steps: int | None = None) -> float:
        n = steps * tcfg.batch_size if steps else n_rows * tcfg.epochs
        return min(n, n_rows * tcfg.epochs) * per_row / train_tps / 3600

    test_tokens, test_docs = _task_tokens(ecfg.tasks, "test", fmt.max_query_tokens, fmt.max_passage_tokens)
    eval_h = test_tokens / encode_tps / 3600
    size_gb = PARAMS.get(next((k for k in PARAMS if k in tcfg.backbone), ""), 1e9) * BYTES_PER_PARAM / 1e9
    dev = mcfg.dev_sample
    dev_tasks = mcfg.dev_tasks or ecfg.tasks
    dev_tokens = len(dev_tasks) * ((dev.queries or 0) * fmt.max_query_tokens
                                   + (dev.corpus or 0) * fmt.max_passage_tokens)
    candidates = sum(mcfg.budgets.get(method, mcfg.search.budget) for method in mcfg.methods)
    lines = [
        Line("backbone", eval_h, None, 0.0, f"{len(ecfg.tasks)} test tasks, {test_docs:,} documents"),
        *(Line(f"train@{e}", train_hours(rows[e], tcfg.max_steps) + eval_h, m["memory_gb"], 0.1,
               f"{rows[e]:,} rows x {per_row} tokens, then the test tasks") for e in EXPERTS),
        Line("merge", candidates * dev_tokens / encode_tps / 3600 + len(mcfg.methods) * eval_h, None,
             size_gb * (len(mcfg.experts) + 1 + len(mcfg.methods)),
             f"{candidates} candidates on {len(dev_tasks)} dev samples; mergekit inputs and {len(mcfg.methods)} merges"),
    ]
    cells = len(acfg.variant_experts) * len(acfg.variants)
    variant_h = sum(train_hours(rows[e], acfg.steps) + eval_h for e in acfg.variant_experts) * len(acfg.variants)
    size_h = sum(train_hours(min(n or rows[acfg.size_expert], rows[acfg.size_expert]), acfg.steps) + eval_h
                 for n in acfg.sizes) * len(acfg.seeds)
    po_h = len(pcfg.gp_sizes) * (train_hours(rows[acfg.po_expert], acfg.steps) + eval_h)
    gepa_h = len(acfg.gepa_budgets) * (train_hours(rows[acfg.po_expert], acfg.steps) + eval_h)
    lines += [Line("ablate_variant", variant_h, m["memory_gb"], 0.1 * cells, f"{cells} cells (Table 4)"),
              Line("ablate_size", size_h, m["memory_gb"], 0.1 * len(acfg.sizes) * len(acfg.seeds),
                   f"{len(acfg.sizes) * len(acfg.seeds)} cells (Figure 4)"),
              Line("ablate_po", po_h, m["memory_gb"], 0.1 * len(pcfg.gp_sizes), f"{len(pcfg.gp_sizes)} cells (Table 10)"),
              Line("ablate_gepa", gepa_h, m["memory_gb"], 0.1 * len(acfg.gepa_budgets),
                   f"{len(acfg.gepa_budgets)} cells (Table 10's GEPA rows), plus each budget's GEPA search")]
    return lines


def render(lines: list[Line], profile: str, backbone: str, measured: dict) -> str:
    out = [f"plan: profile {profile}, backbone {backbone}; throughput of {measured['shape']} measured on "
           f"{measured['device']} ({measured['tokens_per_s']:,} training tokens/s, benchmarks/results/train_gpu.json)",
           "GPU memory: the peak measured at the paper's batch with 256-token passages (more at 512); hours: upper "
           "bounds, every text at its length cap",
           f"{'stage':<16} {'GPU-hours':>9} {'GPU mem GB':>10} {'disk GB':>8}  what"]
    for ln in lines:
        mem = f"{ln.memory_gb:.0f}" if ln.memory_gb is not None else "-"
        out.append(f"{ln.stage:<16} {ln.gpu_hours:>9.2f} {mem:>10} {ln.disk_gb:>8.1f}  {ln.note}")
    main = sum(ln.gpu_hours for ln in lines if not ln.stage.startswith("ablate"))
    out.append(f"{'main line':<16} {main:>9.2f}")
    out.append(f"{'with ablations':<16} {sum(ln.gpu_hours for ln in lines):>9.2f}")
    return "\n".join(out)


def measured_cpu_run(profile: str) -> str:
    """The embedded and smoke profiles: the committed measured run (stage seconds on the CPU it names)."""
    path = paths.ROOT / "benchmarks" / "results" / f"pipeline_{profile}_main.json"
    if not path.exists():
        path = paths.ROOT / "benchmarks" / "results" / f"pipeline_{profile}_all.json"
    if not path.exists():
        return f"plan: profile {profile} runs on the CPU; no measured run in benchmarks/results/ yet"
    rec = json.loads(path.read_text())
    out = [f"plan: profile {profile}, measured ({path.relative_to(paths.ROOT)}), seconds per stage:"]
    out += [f"  {k:<18} {v:>8.1f}" for k, v in rec["stage_seconds"].items()]
    out.append(f"  {'total':<18} {sum(rec['stage_seconds'].values()):>8.1f}")
    return "\n".join(out)
