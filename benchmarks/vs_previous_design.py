"""The current run's merges against an earlier design's, query by query (paired bootstrap over the same test queries).

Usage: python benchmarks/vs_previous_design.py [--ref REV:results/embedded/smollm2/merging.json ...]

Each reference is a merging.json at a git revision (default: the 30-layer design's, still committed under
results/embedded/smollm2/, and the 12-layer 80-step design of commit aff4624). The test tasks must be the same
(their data hashes are checked). Writes benchmarks/results/vs_previous_design.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess

from common import save
from stm import config, paths
from stm.core.stats import bootstrap_mean, paired_bootstrap

DEFAULT_REFS = ["HEAD:results/embedded/smollm2/merging.json", "aff4624:results/embedded/smollm2-12l/merging.json",
                "96bac76:results/embedded/smollm2-12l/merging.json",   # the 40-minute recipe
                "e739c7c:results/embedded/smollm2-12l/merging.json",   # the 32-minute one, LoRA on every layer (README)
                "59a1c57:results/embedded/smollm2-12l/merging.json",   # Med-Synth's questions unfiltered
                "2912115:results/embedded/smollm2-12l/merging.json"]   # the run before: 3 TIES candidates, Linear chosen


def at(ref: str) -> dict:
    return json.loads(subprocess.run(["git", "show", ref], cwd=paths.ROOT, capture_output=True, text=True,
                                     check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", nargs="+", default=DEFAULT_REFS, help="REV:path of an earlier merging.json")
    args = ap.parse_args()
    run = config.Run.of()
    current = json.loads(run.paths.merging_record.read_text())["methods"]
    rows = []
    for ref in args.ref:
        earlier = at(ref)["methods"]
        for m, entry in current.items():
            for em, eentry in earlier.items():
                hashes = {t: r["data_hash"] for t, r in entry["test"]["tasks"].items()}
                assert hashes == {t: r["data_hash"] for t, r in eentry["test"]["tasks"].items()}, "other test data"
                mean, lo, hi = bootstrap_mean(entry["test"])
                rows.append({"current": m, "current_ndcg_at_10": round(mean, 4), "current_ci95": [round(lo, 4), round(hi, 4)],
                             "chosen_on_dev": entry["chosen"]["score"] == max(e["chosen"]["score"] for e in current.values()),
                             "earlier": f"{ref} {em}", "earlier_ndcg_at_10": eentry["test"]["averages"]["all"],
                             **paired_bootstrap(entry["test"], eentry["test"])})
    for r in rows:
        print(f"{r['current']:7s} {r['current_ndcg_at_10']:.3f} vs {r['earlier']:70s} {r['earlier_ndcg_at_10']:.3f}: "
              f"{r['diff']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] {r['verdict']}")
    save("vs_previous_design", {"run": [run.profile, run.backbone], "comparisons": rows})


if __name__ == "__main__":
    main()
