"""How many synthetic hard negatives survive the filters, per prompt template, on the same rows of a split.

Usage: python benchmarks/shn_acceptance.py [--split search] [--rows 48] [--shots 2] [--templates completion fewshot]
                                          [--model gemma3-270m]

The embedded synthesis stage's generator and filters (params.yaml `synthesis`), on the first --rows triples of the
split (the rows the stage itself rewrites). `completion` is the one-shot template with a made-up statin example;
`fewshot` shows --shots real triples of the split (the last rows, disjoint from those judged), each with its mined
negative as the hard one. Prints and saves the kept share and every rejection reason per template.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from common import save
from stm import config, paths
from stm.core.generators import build_generator
from stm.data.schema import read_triples
from stm.synthesis.shn import TEMPLATES, fewshot_template, judge, render


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="search")
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--templates", nargs="+", default=["completion", "fewshot"])
    ap.add_argument("--model", default=None, help="another generator model (an asset id: gemma3-270m)")
    args = ap.parse_args()
    paths.setup_environment()
    cfg = config.load("synthesis")
    rows = read_triples(config.Run.of().paths.splits / f"{args.split}.jsonl")
    judged, shots = rows[: args.rows], rows[-args.shots:]
    if args.model:
        cfg = cfg.model_copy(update={"generator": cfg.generator.model_copy(update={"model": args.model})})
    gen = build_generator(cfg.generator)
    templates = {"completion": TEMPLATES["completion"], "paper": TEMPLATES["paper"],
                 "fewshot": fewshot_template(shots)}
    out = {"split": args.split, "rows": len(judged), "shots": args.shots, "generator": gen.settings(),
           "filters": {k: getattr(cfg, k) for k in ("min_words", "max_words", "max_similarity")}, "templates": {}}
    for name in args.templates:
        prompts = [render(templates[name], r) for r in judged]
        start, texts = time.time(), []
        for i in range(0, len(prompts), cfg.generator.batch_size):
            texts += gen.generate(prompts[i:i + cfg.generator.batch_size], seed_offset=i)
        verdicts = [judge(t, r, cfg) for t, r in zip(texts, judged, strict=True)]
        reasons = Counter(reason or "kept" for _, reason in verdicts)
        kept = [text for text, reason in verdicts if reason is None]
        out["templates"][name] = {"kept_share": round(reasons["kept"] / len(judged), 3), "counts": dict(reasons),
                                  "seconds_per_row": round((time.time() - start) / len(judged), 2),
                                  "examples_kept": kept[:3]}
        print(name, out["templates"][name]["kept_share"], dict(reasons), flush=True)
    save(f"shn_acceptance_{args.split}_{cfg.generator.model}", out)


if __name__ == "__main__":
    main()
