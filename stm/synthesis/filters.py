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
PREFIX = re.compile(r"^(document|passage|question|query|answer|output)\s*[:\-]\s*", re.IGNORECASE)


def clean(text: str | None) -> str:
    if not text:
        return ""
    text = PREFIX.sub("", text.strip().strip('"').strip())
    return " ".join(text.split())


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
) -> str | None:
    """Return the reason a generated text is rejected, or ``None`` if it is kept."""
    if not text:
        return "empty"
    n = len(text.split())
    if n < min_words:
        return "too_short"
    if n > max_words:
        return "too_long"
    if meta.search(text):
        return "meta_commentary"
    low = text.lower()
    for other in not_copies_of:
        if other and (low in other.lower() or similarity(text, other[: len(text) * 2]) > max_similarity):
            return "copy"
    return None


class RejectionCounter(Counter):
    def rate(self) -> float:
        total = sum(self.values())
        return 0.0 if not total else 1.0 - self.get("kept", 0) / total
