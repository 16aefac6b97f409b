"""Unlabeled pre-training pairs for the pre-training ablation (paper Figure 3), from PubMed abstracts.

BMRetriever pre-trains on 10M pseudo-query/passage pairs from unlabeled corpora before fine-tuning; STM
finds that this step does not pay and drops it. Our analogue is the inverse cloze task (Lee et al., 2019) on
the training abstracts: one sentence of an abstract is the pseudo-query, the rest of the abstract its
positive. No label is used, the abstracts are those of the training splits (disjoint from every evaluation
task), and training uses in-batch negatives only, as unsupervised contrastive pre-training does.
"""

from __future__ import annotations

import random
from pathlib import Path

from stm.data.pubmed import sentences
from stm.data.schema import read_triples

INSTRUCTION = "Given a sentence from a biomedical abstract, retrieve the rest of the abstract"


def ict_pairs(split_files: list[Path], seed: int, min_words: int = 6) -> list[dict]:
    """One pair per distinct training abstract with at least three sentences; deterministic given the seed."""
    rng = random.Random(seed)
    passages: dict[str, str] = {}
    for f in split_files:
        for row in read_triples(f):
            passages.setdefault(row.get("pos_id") or row["positive"], row["positive"])
    rows = []
    for pid, text in sorted(passages.items()):
        sents = sentences(text)
        candidates = [i for i, s in enumerate(sents) if len(s.split()) >= min_words]
        if len(sents) < 3 or not candidates:
            continue
        i = rng.choice(candidates)
        rows.append({"id": f"pretrain-{len(rows):06d}", "split": "pretrain", "instruction": INSTRUCTION,
                     "query": sents[i], "positive": " ".join(sents[:i] + sents[i + 1 :]),
                     "negative": "(unused: in-batch negatives only)", "pos_id": pid, "neg_id": "",
                     "source": "ict", "negative_source": "none"})
    return rows
