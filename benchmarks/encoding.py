"""Corpus encoding: our encoder (length-sorted batches, bf16) vs plain SentenceTransformer.encode of the
same exported model (fp32). Usage: python benchmarks/encoding.py [--model artifacts/merged/linear-sentence-transformers]"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import peak_rss_mb, save
from stm import paths
from stm.core.beir import read_beir
from stm.paths import setup_environment


def main():
    setup_environment()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(paths.MERGED / "linear-sentence-transformers"))
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args()
    from sentence_transformers import SentenceTransformer

    from stm.training.export import load_retriever

    corpus = list(read_beir(paths.TASKS / "test" / "pubmed-mesh", "test").corpus.values())[: args.n]
    retriever, _ = load_retriever(Path(args.model), dtype="bfloat16")
    texts = [retriever.text.passage(t) for t in corpus]
    t = time.perf_counter()
    ours = retriever.encode(texts, retriever.fmt.max_passage_tokens, batch_size=32)
    t_ours = time.perf_counter() - t
    st = SentenceTransformer(args.model, device="cpu")
    t = time.perf_counter()
    ref = st.encode(corpus, prompt_name="passage", batch_size=32, convert_to_tensor=True)
    t_st = time.perf_counter() - t
    cos = torch.nn.functional.cosine_similarity(ours, ref.float(), dim=-1)
    save("encoding", {"model": args.model, "passages": len(texts), "ours_passages_per_s": round(len(texts) / t_ours, 1),
                      "sentence_transformers_passages_per_s": round(len(texts) / t_st, 1),
                      "speedup": round(t_st / t_ours, 2), "min_cosine_ours_vs_st": round(float(cos.min()), 4),
                      "peak_rss_mb": round(peak_rss_mb())})


if __name__ == "__main__":
    main()
