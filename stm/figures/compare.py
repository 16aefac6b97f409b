"""A fresh run against the committed one: is each model's score inside the committed bootstrap interval?

On the machine that made the committed results a rerun is bit-identical (the determinism test). On another CPU the
float32 kernels differ in the last bits, SmolLM2's greedy generations can flip on a near-tie, and the data and
scores move a little: the guarantee there is statistical. ``python -m stm compare`` reads the committed records
from git (``HEAD`` by default) and the fresh ones from the working tree, and says model by model whether the fresh
task-averaged nDCG@10 falls inside the committed model's 95% bootstrap interval over queries.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from stm.core.records import MainLine
from stm.figures.claims import bootstrap_mean
from stm.paths import Layout


def committed_records(layout: Layout, ref: str = "HEAD") -> MainLine:
    """The main-line records of the run ``layout`` as committed at ``ref`` in its repository."""
    profile = layout.profile_results.relative_to(layout.root)
    proc = subprocess.run(["git", "archive", ref, str(profile)], cwd=layout.root, capture_output=True)
    if proc.returncode != 0:
        raise FileNotFoundError(f"git archive {ref} {profile}: {proc.stderr.decode().strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(proc.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        return MainLine.load(Layout(layout.profile, layout.backbone, Path(tmp)))


def compare(committed: MainLine, fresh: MainLine) -> list[dict]:
    """One row per committed model (matched to the fresh one by role and name): committed mean and interval, fresh
    mean, and whether it lies inside."""
    rows = []
    now = {(m.role, m.name): m.record for m in fresh.models()}
    for m in committed.models():
        old, new = m.record, now.get((m.role, m.name))
        ci = bootstrap_mean(old)
        if new is None or ci is None:
            rows.append({"model": m.label, "committed": old.average, "ci95": None,
                         "fresh": None if new is None else new.average,
                         "verdict": "missing" if new is None else
                         "identical" if new.averages == old.averages else "no interval (no per-query scores)"})
            continue
        mean, lo, hi = ci
        value = new.average
        same = new.per_query_ndcg_at_10 == old.per_query_ndcg_at_10
        rows.append({"model": m.label, "committed": round(mean, 4), "ci95": [round(lo, 4), round(hi, 4)],
                     "fresh": round(value, 4), "delta": round(value - mean, 4),
                     "verdict": "identical" if same else "inside" if lo <= value <= hi else "outside"})
    return rows


def render(rows: list[dict]) -> str:
    lines = [f"{'model':<22} {'committed':>9} {'95% interval':>18} {'fresh':>7} {'delta':>7}  verdict"]
    for r in rows:
        ci = f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]" if r["ci95"] else "-"
        fresh = f"{r['fresh']:.4f}" if r["fresh"] is not None else "-"
        delta = f"{r['delta']:+.4f}" if r.get("delta") is not None else "-"
        lines.append(f"{r['model']:<22} {r['committed']:>9.4f} {ci:>18} {fresh:>7} {delta:>7}  {r['verdict']}")
    inside = sum(r["verdict"] in ("inside", "identical") for r in rows)
    lines.append(f"{inside} of {len(rows)} models inside the committed intervals")
    return "\n".join(lines)
