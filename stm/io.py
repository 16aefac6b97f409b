"""Small I/O helpers shared by every stage: atomic writes, checked JSONL, hashes, run records."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``target`` only if the block succeeds.

    Works for files and folders, so no half-written output is ever taken as done.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            # renames only: the old folder steps aside into the scratch folder, the new one moves in, then the old
            # one is deleted with the scratch. A kill in between leaves a complete folder (the old one, aside)
            os.replace(target, tmp.parent / f"{target.name}.old")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def read_text_utf8(path: Path | str) -> str:
    """A text file, read as UTF-8 on purpose; a byte that is not UTF-8 is named by file, line and column."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}:{col}: byte 0x{data[e.start]:02x} is not UTF-8; save the file as UTF-8") \
            from None


def write_text(path: Path | str, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path | str, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path | str) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text_utf8(path))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None


def write_jsonl(path: Path | str, rows: Iterable[dict]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def iter_jsonl(path: Path | str, required: Iterable[str] = (), nonempty: Iterable[str] = ()) -> Iterator[dict]:
    """Yield rows of a JSONL file (UTF-8); a malformed line, a missing field, or a ``nonempty`` field that is not a
    non-empty string (null, a list, a number, blank) names file and line."""
    path = Path(path)
    required, nonempty = tuple(required), tuple(nonempty)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with path.open("rb") as f:  # bytes, decoded line by line: a bad byte is named by its line
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 ({e.reason} at column {e.start + 1})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {missing}; found {sorted(row)}")
            empty = [k for k in nonempty if isinstance(row.get(k), str) and not row[k].strip()]
            if empty:
                raise DataError(f"{path}:{lineno}: empty field(s) {empty}")
            wrong = {k: type(row[k]).__name__ for k in nonempty if not isinstance(row.get(k), str)}
            if wrong:
                raise DataError(f"{path}:{lineno}: field(s) must be text: " +
                                ", ".join(f"{k} is {'null' if t == 'NoneType' else 'a ' + t}" for k, t in wrong.items()))
            yield row


def read_jsonl(path: Path | str, required: Iterable[str] = (), nonempty: Iterable[str] = ()) -> list[dict]:
    return list(iter_jsonl(path, required, nonempty))


class ResumeLog:
    """The one resume cache of the project's long loops (generation, merge-candidate scoring): rows appended to a
    JSONL file as they are computed, flushed and synced, so a killed run loses at most the row it was writing.

    On open, rows are read by ``key`` (a row field); a row whose ``fingerprint`` field differs from ``fingerprint``
    (when given) was computed from other inputs and is ignored, so a changed input recomputes rather than reusing a
    stale value. A torn last line (a kill mid-write) is skipped, and cut before the next append."""

    def __init__(self, path: Path | str, key: str = "key", fingerprint: str | None = None):
        self.path, self.key, self.fingerprint = Path(path), key, fingerprint
        self.rows: dict[str, dict] = {}
        data = self.path.read_bytes() if self.path.exists() else b""
        # the length of the whole lines: a torn tail beyond it is cut once, at the first append (read once, here)
        self._whole = data.rfind(b"\n") + 1 if data and not data.endswith(b"\n") else None
        for line in data.decode("utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed run
            if fingerprint is None or row.get("fingerprint") == fingerprint:
                self.rows[row[key]] = row

    def append(self, rows: Iterable[dict]) -> None:
        rows = list(rows)
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._whole is not None:  # cut the torn tail, so the next row starts a line of its own
            with self.path.open("r+b") as f:
                f.truncate(self._whole)
            self._whole = None
        with self.path.open("a", encoding="utf-8") as f:
            for row in rows:
                row = ({"fingerprint": self.fingerprint} | row) if self.fingerprint is not None else row
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                self.rows[row[self.key]] = row
            f.flush()
            os.fsync(f.fileno())


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tree_hash(path: Path | str) -> str:
    """A short content hash of a file or a folder (names and bytes), for run records."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path.parent if path.is_file() else path)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()[:16]


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "asimd", "sve")


def cpu_record() -> dict:
    """The CPU a result was computed on: float32 kernels (and so greedy generations) differ across instruction sets."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": name, "isa": [f for f in ISA_FLAGS if f in flags], "cores": os.cpu_count()}


def environment_record() -> dict:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpu": cpu_record(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
