"""Corpus encoding: our encoder (length-sorted batches, bf16) vs plain SentenceTransformer.encode of the
same exported model (fp32). Usage: python benchmarks/encoding.py [--model artifacts/merged/linear-sentence-transformers]"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


from common import peak_rss_mb, save
from stm import config, paths
from stm.core.beir import read_beir
from stm.paths import setup_environment


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    layout = config.Run.of().paths
    ap.add_argument("--model", default=str(layout.merged / "linear"))
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args()
    from stm.core import retriever as R

    corpus = list(read_beir(layout.tasks / "test" / "pubmed-mesh", "test").corpus.values())[: args.n]
    out = {"model": str(Path(args.model).relative_to(paths.ROOT)) if Path(args.model).is_absolute() else args.model,
           "passages": len(corpus), "dtypes": {}}
    for dtype in ("bfloat16", "float32"):
        model = R.load(args.model, dtype)
        R.encode(model, corpus[:8], R.DOCUMENT)  # warm-up
        t = time.perf_counter()
        R.encode(model, corpus, R.DOCUMENT, batch_size=32)
        out["dtypes"][dtype] = {"passages_per_s": round(len(corpus) / (time.perf_counter() - t), 1)}
    out["peak_rss_mb"] = round(peak_rss_mb())
    save("encoding", out)


if __name__ == "__main__":
    main()
