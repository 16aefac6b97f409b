"""How the Med-Synth questions are written, judged by the expert they train, on dev.

Usage: python benchmarks/medsynth_questions.py [--variants LABEL:key=value,key=value ...] [--reference RECORD]

Each variant builds the embedded data with its ``data`` overrides (``stm.data.build.run``, the data stage itself,
into the git-ignored ``artifacts/sweep/medsynth_<label>/``), trains the Med-Synth expert as the main line does
(``training`` as in params.yaml) and scores it on the dev tasks. Reported: the question writer's counts (kept,
rejected by reason, generated), the stage's seconds, the dev nDCG@10 per task and per query, and a paired bootstrap
against the first variant or against ``--reference``, an evaluation record (``python -m stm evaluate --split dev
--out``) of the committed main line's Med-Synth expert. A finished variant is not rebuilt. Writes
``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import time

from common import reference_record, save
from stm import config, paths
from stm.core.evaluation import evaluate_model, prefix_cache, task_specs
from stm.core.stats import paired_bootstrap
from stm.data import build
from stm.io import environment_record
from stm.paths import setup_environment
from stm.training.train import train

DEFAULT = ["w40_shared1:med_synth_abstract_words=40,med_synth_min_shared_terms=1"]


def parse(spec: str) -> tuple[str, dict]:
    label, _, sets = spec.partition(":")  # a comma starts the next key only before `key=`: JSON values may hold commas
    return label, {k: json.loads(v) for k, v in (s.split("=", 1) for s in re.split(r",(?=\w+=)", sets) if s)}


def run_variant(label: str, overrides: dict) -> dict:
    out = paths.ROOT / "artifacts" / "sweep" / f"medsynth_{label}"
    record_file = out / "dev.json"
    if record_file.exists():
        return json.loads(record_file.read_text())
    base = config.load("data", profile="embedded")
    dcfg = type(base).model_validate(base.model_dump() | overrides)  # validated as params.yaml's values are
    t0 = time.perf_counter()
    build.run(dcfg, out, out / "data_stats.json")
    data_s = time.perf_counter() - t0
    tcfg = config.load("training", profile="embedded")
    t1 = time.perf_counter()
    train(tcfg, "med_synth", out / "model", out)
    train_s = time.perf_counter() - t1
    ecfg = config.load("evaluation", profile="embedded")
    dev = evaluate_model(out / "model" / "adapter", ecfg, f"med_synth_{label}", out / "tasks", "dev",
                         specs=task_specs(ecfg, out / "tasks", "dev"), prefix=prefix_cache(ecfg))
    stats = json.loads((out / "data_stats.json").read_text())
    row = {"variant": label, "data_overrides": overrides, "writer": stats.get("med_synth"),
           "data_seconds": round(data_s, 1), "train_seconds": round(train_s, 1), "dev_ndcg_at_10": dev.average,
           "per_task": {t: s["ndcg_at_10"] for t, s in dev.scores.items()},
           "per_query_ndcg_at_10": dev.per_query_ndcg_at_10}
    record_file.write_text(json.dumps(row))
    return row


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=DEFAULT, help="LABEL:key=value,... (data keys, JSON values)")
    ap.add_argument("--reference", help="an evaluation record of the reference Med-Synth expert on dev")
    ap.add_argument("--reference-label", default="reference")
    ap.add_argument("--name", default="medsynth_questions", help="results file stem in benchmarks/results/")
    args = ap.parse_args()
    rows = [run_variant(*parse(v)) for v in args.variants]
    ref = reference_record(args.reference, args.reference_label) if args.reference else rows[0]
    table = [{k: v for k, v in r.items() if k != "per_query_ndcg_at_10"}
             | {"vs_reference": None if r is ref else paired_bootstrap(r, ref)} for r in rows]
    save(args.name, {"split": "dev", "expert": "med_synth", "reference": {k: v for k, v in ref.items()
                                                                          if k != "per_query_ndcg_at_10"},
                     "variants": table, "environment": environment_record()})


if __name__ == "__main__":
    main()
