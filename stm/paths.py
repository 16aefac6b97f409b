"""Every path the project uses, defined once.

Outputs live per run, so that profiles and backbones never overwrite each other; the layout is the one
``dvc.yaml`` declares with ``${profile}`` and ``${backbone}`` (the two top-level keys of ``params.yaml``):

- per profile (the data, whatever backbone trains on it): ``data/processed/<profile>/{splits,splits_dev,tasks,
  synthesis}``, ``results/<profile>/{data_stats,synthesis,baselines}.json``, ``reports/<profile>/``;
- per profile and backbone: ``data/processed/<profile>/<backbone>/prompts`` (the PO method is per backbone),
  ``artifacts/<profile>/<backbone>/{experts,merged,ablations}``, ``results/<profile>/<backbone>/`` (backbone,
  experts, merging, ablations, figures) and ``reports/<profile>/<backbone>/``.

The run is the one ``params.yaml`` names, read on import (the two keys only: ``stm.config`` validates them, and the
CLI sets them again validated); ``use(profile, backbone)`` points the folders at another run. ``STM_ROOT``
relocates the whole tree (the tests use it to run a pipeline in a temporary copy).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(os.environ.get("STM_ROOT", Path(__file__).resolve().parents[1]))
PARAMS = ROOT / "params.yaml"

DATA = ROOT / "data"
ASSETS = DATA / "assets"  # downloaded wheels, extracted files, converted models (git-ignored), shared by all runs
WHEELS = Path(os.environ.get("STM_WHEELS", ASSETS / "wheels"))  # shareable download cache
MODELS_DIR = ASSETS / "models"
PUBMED_DIR = ASSETS / "pubmed"
PAPER_RESULTS = DATA / "paper_results.yaml"  # the paper's reported numbers, transcribed
NOTEBOOKS = ROOT / "notebooks"
CACHE = ROOT / ".cache"  # HF home, MTEB cache, matplotlib config: kept inside the project


def layout(profile: str, backbone: str) -> dict[str, Path]:
    """The run folders of one profile and backbone (the names this module exposes, e.g. ``paths.SPLITS``)."""
    processed = DATA / "processed" / profile
    artifacts = ROOT / "artifacts" / profile / backbone
    results = ROOT / "results" / profile / backbone
    return {
        "PROCESSED": processed,  # DVC outputs of the data and synthesis stages
        "SPLITS": processed / "splits",
        "TASKS": processed / "tasks",
        "SYNTH": processed / "synthesis",  # generation caches and synthetic hard negatives
        "PROMPTS": processed / backbone / "prompts",
        "PROFILE_RESULTS": ROOT / "results" / profile,  # small committed metric files (DVC metrics, cache: false)
        "PROFILE_REPORTS": ROOT / "reports" / profile,  # executed notebooks and their HTML renderings
        "ARTIFACTS": artifacts,  # adapters, checkpoints, merged models (DVC outputs, git-ignored)
        "EXPERTS": artifacts / "experts",  # main-line experts and FT-all: <expert>/adapter
        "ABLATIONS": artifacts / "ablations",
        "MERGED": artifacts / "merged",
        "RESULTS": results,
        "FIGURES": results / "figures",
        "REPORTS": ROOT / "reports" / profile / backbone,
    }


def use(profile: str, backbone: str) -> None:
    """Point the run folders (``paths.RESULTS``, ``paths.EXPERTS``, ...) at ``profile`` / ``backbone``."""
    globals().update(layout(profile, backbone))


def expert_variant(expert: str, variant: str) -> Path:
    """A main-line expert in another variant that a merge method takes (``merging.variants``), inside the expert's
    training-stage output: ``artifacts/<profile>/<backbone>/experts/<expert>/variants/<variant>``."""
    return globals()["EXPERTS"] / expert / "variants" / variant


def _params_run() -> tuple[str, str]:
    """``params.yaml``'s two run keys, unvalidated (``stm.config.active_run`` validates them and names a bad one)."""
    try:
        raw = yaml.safe_load(PARAMS.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # stm.config reads the file again and names what is wrong
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    return str(raw.get("profile", "embedded")), str(raw.get("backbone", "smollm2"))


use(*_params_run())


def setup_environment() -> None:
    """Keep every tool's cache inside the project; the hub stays reachable unless the user opts out."""
    # the hub's model and dataset caches, not HF_HOME: HF_HOME also holds the login token (`hf auth login`), which
    # the gated google/gemma-2b needs (HF_TOKEN works too), so it stays where the user's login put it, before
    # XDG_CACHE_HOME (which the hub would derive it from) moves into the project
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ.setdefault("HF_HOME", os.path.join(user_cache, "huggingface"))
    for var, sub in {
        "HF_HUB_CACHE": "hf/hub",
        "HF_DATASETS_CACHE": "hf/datasets",
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
