"""Post-filters for what small generators write. Each rejection has a named reason, and is counted."""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher

_CHATTER = r"^(sure|here is|here's|certainly|of course|i (can|cannot|can't|will)|as an ai|note:|this (document|passage|text))"
# for generated documents and queries: chatter, or talk about the task itself
META = re.compile(_CHATTER + r"|(hard negative|negative document|the query|the positive document|original prompt)",
                  re.IGNORECASE)
# for generated retrieval prompts, which may well mention "the query": chatter only
PROMPT_META = re.compile(_CHATTER + r"|(here are|generic prompt|prompt text)", re.IGNORECASE)
MARKUP = re.compile(r"https?:|www\.|[\[\]{}|#<>]|\.(com|org|io)\b")
PREFIX = re.compile(r"^(document|passage|question|query|answer|output)\s*[:\-]\s*", re.IGNORECASE)


def clean(text: str | None) -> str:
    if not text:
        return ""
    text = PREFIX.sub("", text.strip().strip('"').strip())
    return " ".join(text.split())


_STOP = set(
    "with that this from were have been which their these into also such than between after more other during both "
    "only there they when where while what will would could should about among based using used study studies "
    "results patients however each within most some well very over under high higher lower".split()
)


def _terms(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{4,}", text.lower())} - _STOP


def similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, a.lower(), b.lower(), autojunk=False).ratio()


def check(
    text: str,
    *,
    min_words: int,
    max_words: int,
    not_copies_of: tuple[str, ...] = (),
    max_similarity: float = 0.85,
    meta: re.Pattern = META,
    on_topic_with: str | None = None,
    min_shared_terms: int = 2,
) -> str | None:
    """Return the reason a generated text is rejected, or ``None`` if it is kept.

    ``on_topic_with``: the text must share at least ``min_shared_terms`` content words (4+ letters) with this one:
    a hard negative with its positive and query, as the paper asks for "similar terminology"; a Med-Synth question
    with the abstract words its writer read (``data.med_synth_min_shared_terms``).
    """
    if not text:
        return "empty"
    n = len(text.split())
    if n < min_words:
        return "too_short"
    if n > max_words:
        return "too_long"
    if meta.search(text):
        return "meta_commentary"
    if MARKUP.search(text):
        return "markup"
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isupper() for c in letters) > 0.5 * len(letters):
        return "not_prose"
    if on_topic_with is not None and len(_terms(text) & _terms(on_topic_with)) < min_shared_terms:
        return "off_topic"
    low = text.lower()
    for other in not_copies_of:
        if other and (low in other.lower() or similarity(text, other[: len(text) * 2]) > max_similarity):
            return "copy"
    return None


class RejectionCounter(Counter):
    def rate(self) -> float:
        total = sum(self.values())
        return 0.0 if not total else 1.0 - self.get("kept", 0) / total
