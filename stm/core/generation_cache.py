"""Per-row generation cache: an interrupted run resumes where it stopped, a re-run regenerates nothing.

Rows are appended to a JSONL file (``stm.io.ResumeLog``) and synced after every batch. Each row is keyed by a hash of the
generator id, its decoding settings and the prompt, so changing any of them regenerates only the
affected rows. A torn last line (from a kill mid-write) is ignored on load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from stm.io import ResumeLog, sha256_text
from stm.core.generators import Generator


def row_key(generator: Generator, prompt: str, sample_id: int = 0) -> str:
    return sha256_text(json.dumps([generator.id, generator.settings(), prompt, sample_id], sort_keys=True))[:24]


def load_cache(path: Path) -> dict[str, dict]:
    return ResumeLog(path).rows


def generate_cached(
    generator: Generator, prompts: Sequence[str], cache_path: Path | str, batch_size: int = 8,
    desc: str = "generate", sample_ids: Sequence[int] | None = None,
) -> list[str | None]:
    """Generate an output per prompt, reusing and extending the cache at ``cache_path``.

    ``sample_ids`` distinguish repeated samples of the same prompt (GP-N pools).
    """
    log = ResumeLog(cache_path)
    cached = log.rows
    sample_ids = list(sample_ids) if sample_ids is not None else [0] * len(prompts)
    keys = [row_key(generator, p, s) for p, s in zip(prompts, sample_ids, strict=True)]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in cached or cached[k]["output"] is None}.values())
    settings = generator.settings()
    if todo:
        with tqdm(total=len(todo), desc=desc, unit="row") as bar:
            for start in range(0, len(todo), batch_size):
                idx = todo[start : start + batch_size]
                outputs = generator.generate([prompts[i] for i in idx], seed_offset=int(keys[idx[0]][:6], 16))
                log.append({"key": keys[i], "generator": generator.id, "settings": settings, "output": out}
                           for i, out in zip(idx, outputs, strict=True))
                bar.update(len(idx))
    return [cached[k]["output"] for k in keys]
