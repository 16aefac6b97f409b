"""Every path the project uses, defined once.

``STM_ROOT`` relocates the whole tree (the tests use it to run a pipeline in a temporary copy).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("STM_ROOT", Path(__file__).resolve().parents[1]))
PARAMS = ROOT / "params.yaml"

DATA = ROOT / "data"
ASSETS = DATA / "assets"  # downloaded wheels, extracted files, converted models (git-ignored)
WHEELS = Path(os.environ.get("STM_WHEELS", ASSETS / "wheels"))  # shareable download cache
MODELS_DIR = ASSETS / "models"
PUBMED_DIR = ASSETS / "pubmed"
PROCESSED = DATA / "processed"  # DVC outputs: training splits and evaluation tasks
SPLITS = PROCESSED / "splits"
TASKS = PROCESSED / "tasks"
SYNTH = PROCESSED / "synthesis"  # generation caches and synthetic hard negatives
PROMPTS = PROCESSED / "prompts"
PAPER_RESULTS = DATA / "paper_results.yaml"  # the paper's reported numbers, transcribed

ARTIFACTS = ROOT / "artifacts"  # adapters, checkpoints, merged models (DVC outputs, git-ignored)
EXPERTS = ARTIFACTS / "experts"  # main-line experts and FT-all: artifacts/experts/<expert>/adapter
ABLATIONS = ARTIFACTS / "ablations"
MERGED = ARTIFACTS / "merged"

RESULTS = ROOT / "results"  # small committed metric files (DVC metrics, cache: false)
FIGURES = RESULTS / "figures"
NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "reports"  # executed notebooks and their HTML renderings (DVC outputs)
CACHE = ROOT / ".cache"  # HF home, MTEB cache, matplotlib config: kept inside the project


def setup_environment() -> None:
    """Keep every tool's cache inside the project; the hub stays reachable unless the user opts out."""
    for var, sub in {
        "HF_HOME": "hf",
        "MTEB_CACHE": "mteb",
        "MPLCONFIGDIR": "matplotlib",
        "XDG_CACHE_HOME": "xdg",
    }.items():
        os.environ.setdefault(var, str(CACHE / sub))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    # HF_HUB_OFFLINE is left to the user: the paper profile reads the hub; ./run.sh sets it for the embedded path
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
