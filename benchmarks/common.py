"""Shared helpers for the benchmark scripts: a measured bf16 matmul peak, peak memory, JSON output."""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results"


def matmul_peak_tflops(dtype=torch.bfloat16, n: int = 2048, repeats: int = 5) -> float:
    """This CPU's (or GPU's) dense matmul throughput, measured with a large torch.matmul."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, record: dict) -> Path:
    OUT.mkdir(exist_ok=True)
    from stm.io import cpu_record

    record = record | {"machine": platform.machine(), "cpu": cpu_record(), "cpu_threads": torch.get_num_threads(),
                       "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return path


def reference_record(path: Path | str, label: str) -> dict:
    """A model to hold a sweep's cells against: an evaluation record (``python -m stm evaluate --split dev --out``,
    e.g. of the committed main line's expert), as a row with the fields ``paired_bootstrap`` reads."""
    rec = json.loads(Path(path).read_text())
    return {"label": label, "dev_ndcg_at_10": rec["averages"]["all"],
            "per_task": {t: s["ndcg_at_10"] for t, s in rec["scores"].items()},
            "per_query_ndcg_at_10": rec["per_query_ndcg_at_10"]}
