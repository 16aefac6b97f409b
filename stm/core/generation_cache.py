"""Per-row generation cache: an interrupted run resumes where it stopped, a re-run regenerates nothing.

Rows are appended to a JSONL file and flushed after every batch. Each row is keyed by a hash of the
generator id, its decoding settings and the prompt, so changing any of them regenerates only the
affected rows. A torn last line (from a kill mid-write) is ignored on load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from stm.io import sha256_text
from stm.core.generators import Generator


def row_key(generator: Generator, prompt: str, sample_id: int = 0) -> str:
    return sha256_text(json.dumps([generator.id, generator.settings(), prompt, sample_id], sort_keys=True))[:24]


def load_cache(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn final line of an interrupted run
        rows[row["key"]] = row
    return rows


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (a kill mid-write) so the next append starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def generate_cached(
    generator: Generator, prompts: Sequence[str], cache_path: Path | str, batch_size: int = 8,
    desc: str = "generate", sample_ids: Sequence[int] | None = None,
) -> list[str | None]:
    """Generate an output per prompt, reusing and extending the cache at ``cache_path``.

    ``sample_ids`` distinguish repeated samples of the same prompt (GP-N pools).
    """
    cache_path = Path(cache_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cached = load_cache(cache_path)
    sample_ids = list(sample_ids) if sample_ids is not None else [0] * len(prompts)
    keys = [row_key(generator, p, s) for p, s in zip(prompts, sample_ids, strict=True)]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in cached or cached[k]["output"] is None}.values())
    settings = generator.settings()
    if todo:
        _drop_torn_tail(cache_path)
        with cache_path.open("a") as f, tqdm(total=len(todo), desc=desc, unit="row") as bar:
            for start in range(0, len(todo), batch_size):
                idx = todo[start : start + batch_size]
                outputs = generator.generate([prompts[i] for i in idx], seed_offset=int(keys[idx[0]][:6], 16))
                for i, out in zip(idx, outputs, strict=True):
                    row = {"key": keys[i], "generator": generator.id, "settings": settings, "output": out}
                    cached[keys[i]] = row
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                bar.update(len(idx))
    return [cached[k]["output"] for k in keys]
