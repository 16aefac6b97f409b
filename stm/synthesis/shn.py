"""Synthetic hard negatives (SHN, paper section 3.1.1 and appendix B.1).

For each triple the generator gets the query, the original instruction, the positive and the mined
negative, and writes one negative that stays on topic but does not answer the query. What small
models write is post-filtered (empty, meta-commentary, copies of the positive or query, wrong
length); every rejection is counted by reason, and rejected rows keep their mined negative.

``mode: replace`` (default) swaps the mined negative for the synthetic one; ``mode: add`` keeps the
mined one and adds the synthetic one as a second hard negative (``extra_negative``). The paper does
not say which it did; its loss has one hard negative per query, which suggests replace.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

from stm.config import SynthesisConfig, TrainingConfig, dump
from stm.data.bmretriever import load_negatives
from stm.data.pubmed import truncate_words
from stm.data.schema import read_triples
from stm.io import write_json, write_jsonl
from stm.core.generation_cache import generate_cached
from stm.core.filters import RejectionCounter, check, clean
from stm.core.generators import build_generator
from stm.core.sampling import rows_in_training_order, training_steps

log = logging.getLogger(__name__)

# Appendix B.1, verbatim.
PAPER_TEMPLATE = """Given this query: "{query}"
Original prompt: "{instruction}"
Original positive document: "{positive}"
Original negative document: "{negative}"
Generate a HARD negative document that is:
1. Related to the same domain (extract domain from the query)
2. Contains similar terminology and concepts as the positive document
3. But is NOT relevant to answering the specific query
4. Should be moderately challenging to distinguish from the positive document
5. Should be a realistic document in the domain
6. Should be harder than the original negative document but not as hard as a super hard negative
IMPORTANT: Return ONLY the document text. Do not include any introductory text, explanations, summaries, or meta-commentary. Just return the raw document content."""

# For completion-style small models (SmolLM2-135M, base Gemma): the same four inputs as a one-shot pattern.
# Measured on SmolLM2-135M: with the paper's instruction it mostly wrote markup and chatter.
COMPLETION_TEMPLATE = (
    "Task: Given a keyword search query, retrieve relevant biomedical abstracts\n"
    "Query: statin therapy cholesterol\n"
    "Relevant abstract: Statin therapy reduced LDL cholesterol by 40% in 2,000 adults with hyperlipidemia over two years.\n"
    "Easy negative: Malaria incidence fell after bed nets were distributed in rural Kenya.\n"
    "Hard negative: Cholesterol crystals were imaged in arterial plaques of rabbits fed a high-fat diet; plaque size "
    "grew with dietary cholesterol, and no drug therapy was studied.\n\n"
    "Task: {instruction}\nQuery: {query}\nRelevant abstract: {positive}\nEasy negative: {negative}\nHard negative:"
)

TEMPLATES = {"paper": PAPER_TEMPLATE, "completion": COMPLETION_TEMPLATE}
FIELDS = ("query", "instruction", "positive", "negative")
REQUIRED = ("query", "positive")  # what a negative is written against; the others are context


class TemplateError(ValueError):
    pass


def fewshot_template(shots: list[dict], words: int = 40) -> str:
    """A completion template whose examples are real triples of the split: each shot's query, the start of its
    positive, and the start of its mined negative as the hard negative (on the query's topic, not its answer)."""
    def esc(text: str) -> str:
        return truncate_words(" ".join(str(text).split()), words).replace("{", "{{").replace("}", "}}")

    blocks = [f"Task: {esc(r['instruction'])}\nQuery: {esc(r['query'])}\nRelevant abstract: {esc(r['positive'])}\n"
              f"Hard negative: {esc(r['negative'])}" for r in shots]
    return "\n\n".join([*blocks, "Task: {instruction}\nQuery: {query}\nRelevant abstract: {positive}\nHard negative:"])


def render(template: str, row: dict, max_words: int = 120) -> str:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    unknown = names - set(FIELDS)
    if unknown:
        raise TemplateError(f"SHN template uses unknown field(s) {sorted(unknown)}; allowed: {list(FIELDS)}")
    missing = [f for f in REQUIRED if f not in names]
    if missing:
        raise TemplateError(f"SHN template is missing field(s) {missing}")
    values = {f: truncate_words(str(row[f]), max_words) for f in names}
    return template.format(**values)


def judge(output: str | None, row: dict, cfg: SynthesisConfig) -> tuple[str, str | None]:
    """A generated negative, cleaned, and the reason it is rejected (``None``: kept)."""
    text = clean(output)
    if output is None:
        return text, "generator_failed"
    return text, check(text, min_words=cfg.min_words, max_words=cfg.max_words,
                       not_copies_of=(row["positive"], row["query"]), max_similarity=cfg.max_similarity,
                       on_topic_with=f"{row['query']} {row['positive']}")


def rows_to_rewrite(cfg: SynthesisConfig, n_rows: int, training: TrainingConfig | None) -> list[int]:
    """Indices of the split's rows to write a negative for: with ``rows: trained`` the rows its expert's training
    sees, in the order it first sees them (measured on the committed 40-step run: only 80 of the first 320 rows were
    in the Search expert's batches, so three quarters of the stage's 13 minutes wrote negatives nobody trained on);
    capped at ``rows_per_split``."""
    if cfg.rows == "trained":
        if training is None:
            raise ValueError("synthesis.rows: trained needs the training config (batch size, steps, seed)")
        steps = training_steps(n_rows, training.batch_size, training.max_steps, training.epochs,
                               training.max_epochs)
        order = rows_in_training_order(n_rows, training.batch_size, steps, training.seed)
    else:
        order = list(range(n_rows))
    return order[: cfg.rows_per_split or len(order)]


def run(cfg: SynthesisConfig, processed: Path, results: Path, template: str | None = None,
        training: TrainingConfig | None = None) -> dict:
    """Write ``synthesis/shn/<split>.jsonl``: each split's rows, a synthetic hard negative in place of (``replace``)
    or beside (``add``) the mined one where the generator wrote one that passes the filters. ``training``: the
    config whose batch order decides the rows (``synthesis.rows: trained``). ``processed``: the profile's data
    folder (``Layout.processed``); ``results``: the stage's record (``Layout.synthesis_record``)."""
    processed = Path(processed)
    inputs = {split: read_triples(processed / "splits" / f"{split}.jsonl") for split in cfg.splits}  # before any model
    if cfg.released:
        return join_released(cfg, inputs, processed, results)
    gen = build_generator(cfg.generator)
    template = template or TEMPLATES["completion" if getattr(gen, "chat", True) is False else "paper"]
    report: dict = {"generator": gen.id, "settings": gen.settings(), "mode": cfg.mode, "config": dump(cfg),
                    "template": template, "splits": {}}
    for split in cfg.splits:
        rows = inputs[split]
        chosen = rows_to_rewrite(cfg, len(rows), training)
        n = len(chosen)
        prompts = [render(template, rows[i]) for i in chosen]
        outs = generate_cached(gen, prompts, processed / "synthesis" / "cache" / f"shn_{split}.jsonl",
                               cfg.generator.batch_size, desc=f"SHN {split}")
        written = dict(zip(chosen, outs, strict=True))
        counts = RejectionCounter()
        out_rows = []
        for i, r in enumerate(rows):
            r = dict(r)
            text, reason = None, "not_attempted"
            if i in written:
                text, reason = judge(written[i], r, cfg)
            counts[reason or "kept"] += 1
            if cfg.mode == "replace":
                if reason is None:
                    r.update(mined_negative=r["negative"], negative=text, negative_source=f"synthetic:{gen.id}")
            else:  # add: a second hard negative; fall back to the mined one so every row has two
                r["extra_negative"] = text if reason is None else r["negative"]
            out_rows.append(r)
        write_jsonl(processed / "synthesis" / "shn" / f"{split}.jsonl", out_rows)
        attempted = n
        report["splits"][split] = {
            "rows": len(rows), "attempted": attempted, "chosen_by": cfg.rows, "counts": dict(counts),
            "kept": counts.get("kept", 0),
            "rejection_rate": round(1 - counts.get("kept", 0) / max(1, attempted), 4),
        }
        log.info("SHN %s: kept %d of %d", split, counts.get("kept", 0), attempted)
    write_json(results, report)
    return report


def join_released(cfg: SynthesisConfig, inputs: dict[str, list[dict]], processed: Path, results: Path) -> dict:
    """The authors' released synthetic negatives instead of generating: each row takes the negative released for
    its ``bmretriever_index`` (the BMRetriever row it came from); the counts of joined and missing rows are kept."""
    negatives = load_negatives(cfg.released)
    report: dict = {"generator": f"released:{cfg.released}", "mode": cfg.mode, "config": dump(cfg), "splits": {}}
    for split, rows in inputs.items():
        out_rows, joined = [], 0
        for r in rows:
            neg = negatives.get(r.get("bmretriever_index", -1))
            if neg is not None:
                joined += 1
                r = r | ({"mined_negative": r["negative"], "negative": neg} if cfg.mode == "replace"
                         else {"extra_negative": neg}) | {"negative_source": f"released:{cfg.released}"}
            elif cfg.mode == "add":
                r = r | {"extra_negative": r["negative"]}
            out_rows.append(r)
        write_jsonl(processed / "synthesis" / "shn" / f"{split}.jsonl", out_rows)
        report["splits"][split] = {"rows": len(rows), "attempted": len(rows), "kept": joined,
                                   "counts": {"kept": joined, "no_released_negative": len(rows) - joined},
                                   "rejection_rate": round(1 - joined / max(1, len(rows)), 4)}
        log.info("SHN %s: %d of %d rows joined to a released negative", split, joined, len(rows))
    write_json(results, report)
    return report
