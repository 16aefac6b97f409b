"""Is it pre-training, or twice the steps? A compute-matched control for Figure 3.

Usage: python benchmarks/pretrain_control.py (after ``dvc repro ablate_pretrain``; the profile and backbone of
``params.yaml``)

The Figure 3 cells each train ``ablations.steps`` steps, so PT+FT (PT's steps, then FT's) trains twice as long as
FT. This script trains FT exactly as the ``ablate_pretrain`` stage's FT cell does (same expert, data, seed and
settings) but for PT+FT's total number of steps, scores it on the same test split, and compares it with the
committed PT+FT and FT records by the report's paired bootstrap over queries:

- PT+FT vs FT at the same steps: what pre-training adds once the step count is matched (the paper's claim);
- FT at twice the steps vs FT: what the extra steps alone add.

The adapter goes to ``artifacts/<profile>/<backbone>/benchmarks/pretrain_control`` (git-ignored; an interrupted
run resumes from its checkpoint). Writes ``benchmarks/results/pretrain_control.json``: the control's record (with
its per-query nDCG@10) and both comparisons, which the ablations report shows beside Figure 3 when the profile
and backbone match.
"""

from __future__ import annotations

import time

from common import save
from stm import config
from stm.core.evaluation import evaluate_model
from stm.figures.claims import paired_bootstrap
from stm.core.records import Ablations
from stm.paths import setup_environment
from stm.training.ablations import with_overrides
from stm.training.train import train


def main():
    setup_environment()
    run = config.Run.of()  # the run whose Figure 3 records this controls
    layout, profile, backbone = run.paths, run.profile, run.backbone
    a, tcfg, ecfg = run.load("ablations"), run.load("training"), run.load("evaluation")
    pre = Ablations.load(layout).of("pretrain")
    missing = {"pt_ft", "ft"} - set(pre)
    if missing:
        raise SystemExit(f"no Figure 3 record for {sorted(missing)} under {layout.relative(layout.results)}: "
                         "run `dvc repro ablate_pretrain` first")
    ft_steps = pre["ft"].train.steps
    matched = 2 * ft_steps  # PT's steps plus FT's: the PT and FT cells train the same number
    cfg = with_overrides(tcfg, max_steps=matched)
    out = layout.artifacts / "benchmarks" / "pretrain_control"
    t0 = time.perf_counter()
    record = train(cfg, a.size_expert, out, layout.processed, prompts=layout.prompts)
    train_s = time.perf_counter() - t0
    result = evaluate_model(out / "adapter", ecfg, f"pretrain/ft_{matched}_steps", layout.tasks,
                            extra={"train": record.summary()})
    comparisons = {
        f"PT+FT vs FT, both {matched} steps (what pre-training adds)": paired_bootstrap(pre["pt_ft"], result),
        f"FT {matched} steps vs FT {ft_steps} steps (what the extra steps add)": paired_bootstrap(result, pre["ft"]),
    }
    averages = {"pt_ft": pre["pt_ft"].average, f"ft_{ft_steps}": pre["ft"].average, f"ft_{matched}": result.average}
    save("pretrain_control", {"profile": profile, "backbone": backbone, "expert": a.size_expert, "steps": matched,
                              "train_seconds": round(train_s, 1), "test_ndcg_at_10": averages,
                              "comparisons": comparisons, "record": result.dump()})


if __name__ == "__main__":
    main()
