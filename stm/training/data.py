"""Training rows for one expert and variant (FT, SHN, PO, SHN+PO), read from the shared triple files."""

from __future__ import annotations

import random
from pathlib import Path

from stm.config import SPLIT_NAMES, TrainingConfig, uses_po, uses_shn
from stm.core.retriever import portable
from stm.data.schema import read_triples
from stm.io import DataError, read_json, sha256_file


def split_files(expert: str, variant: str, processed: Path) -> list[Path]:
    """The triple files an expert trains on: its split, or the union of the four for ``all``, in the profile's data
    folder ``processed`` (``Layout.processed``)."""
    processed = Path(processed)
    splits = SPLIT_NAMES if expert == "all" else (expert,)
    base = processed / ("synthesis/shn" if uses_shn(variant) else "splits")
    return [base / f"{s}.jsonl" for s in splits]


def prompts_file(prompts: Path | None) -> Path:
    """The prompts stage's selection in the folder ``prompts`` (``Layout.prompts``: the PO method is the backbone's)."""
    if prompts is None:
        raise DataError("a PO variant trains on the prompts stage's selection: no prompts folder was given "
                        "(training.prompts_file, or the run's data/processed/<profile>/<backbone>/prompts)")
    return Path(prompts) / "selected.json"


def optimizer_name(selected: dict) -> str | None:
    """The prompt optimizer as the paper names it (Table 6, Table 10): ``gp10``, ``gepa-medium``, ``none``."""
    name = selected.get("optimizer")
    if name == "gp" and selected.get("size") is not None:
        return f"gp{selected['size']}"
    if name == "gepa" and selected.get("budget"):
        return f"gepa-{selected['budget']}"
    return name


def load_rows(cfg: TrainingConfig, expert: str, processed: Path, prompts: Path | None = None) -> tuple[list[dict], dict]:
    """Read, check and prepare the rows of the profile's data folder ``processed``, with the PO variants' prompts
    from the folder ``prompts``; returns (rows, record of files, hashes and prompts)."""
    processed = Path(processed)
    variant = cfg.variant_for(expert)
    files = [Path(cfg.train_file)] if cfg.train_file else split_files(expert, variant, processed)
    for f in files:  # fail before any compute, naming the file
        if not f.exists():
            hint = ("check training.train_file" if cfg.train_file else
                    "run the synthesis stage" if uses_shn(variant) else "run the data stage")
            raise DataError(f"{f}: training file missing for expert {expert!r} ({variant}); {hint}")
    rows = [r for f in files for r in read_triples(f)]
    # named from the profile's folder (embedded/splits/search.jsonl), or the repository: the same on every machine
    record = {"files": {str(f.relative_to(processed.parent)) if f.is_relative_to(processed.parent) else portable(str(f)):
                        sha256_file(f) for f in files}}
    rng = random.Random(cfg.seed)
    if cfg.max_train_rows and len(rows) > cfg.max_train_rows:
        rows = rng.sample(rows, cfg.max_train_rows)
    if uses_po(variant):
        pf = Path(cfg.prompts_file) if cfg.prompts_file else prompts_file(prompts)
        if cfg.po_pool is not None:
            pf = pf.with_name("gp.json")
        if not pf.exists():
            raise DataError(f"{pf}: optimized prompts missing for variant {variant!r}; run the prompts stage")
        selected = read_json(pf)
        pools = selected.get("pools", {})
        if cfg.po_pool is not None:
            if str(cfg.po_pool) not in pools:
                raise DataError(f"{pf}: no GP pool of size {cfg.po_pool} (found {sorted(pools)})")
            selected = {"optimizer": f"gp{cfg.po_pool}"}
            pools = {"*": pools[str(cfg.po_pool)]}
        for r in rows:
            pool = pools.get(r["split"]) or pools.get("*")
            if not pool:
                raise DataError(f"{pf}: no prompt pool for split {r['split']!r} (found {sorted(pools)})")
            r["instruction"] = rng.choice(pool)
        record["prompts"] = {"file": str(pf.name), "sha256": sha256_file(pf), "optimizer": optimizer_name(selected)}
    if len(rows) < 2:
        raise DataError(f"expert {expert!r}: {len(rows)} training rows in {[str(f) for f in files]}; need at least 2")
    record["rows"] = len(rows)
    return rows, record
