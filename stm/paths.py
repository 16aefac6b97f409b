"""Every path the project uses, defined once.

Outputs live per run, so that profiles and backbones never overwrite each other; the layout is the one
``dvc.yaml`` declares with ``${profile}`` and ``${backbone}`` (the two top-level keys of ``params.yaml``):

- per profile (the data, whatever backbone trains on it): ``data/processed/<profile>/{splits,splits_dev,tasks,
  synthesis}``, ``results/<profile>/{data_stats,synthesis,baselines}.json``, ``reports/<profile>/``;
- per profile and backbone: ``data/processed/<profile>/<backbone>/prompts`` (the PO method is per backbone),
  ``artifacts/<profile>/<backbone>/{experts,merged,ablations}``, ``results/<profile>/<backbone>/`` (backbone,
  experts, merging, ablations, figures) and ``reports/<profile>/<backbone>/``.

Nothing here changes at run time: the run-independent folders are constants, and a run's folders are a frozen
``Layout(profile, backbone)``, built once from the validated ``params.yaml`` (``stm.config.Run``) by the CLI or a
notebook's parameters, and handed to each stage function. ``STM_ROOT`` relocates the whole tree (the tests use it
to run a pipeline in a temporary copy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Layout:
    """The folders and files of one run (``profile``, ``backbone``): the layout ``dvc.yaml`` declares with
    ``${profile}`` and ``${backbone}``. Built once per process (``stm.config.Run``) and passed to every stage
    function that reads or writes a run's files; each file name is spelled here and nowhere else."""

    profile: str
    backbone: str
    root: Path = ROOT

    # per profile: the data, whatever backbone trains on it
    @property
    def processed(self) -> Path:  # DVC outputs of the data and synthesis stages
        return self.root / "data" / "processed" / self.profile

    @property
    def splits(self) -> Path:
        return self.processed / "splits"

    @property
    def splits_dev(self) -> Path:
        return self.processed / "splits_dev"

    @property
    def tasks(self) -> Path:
        return self.processed / "tasks"

    @property
    def synth(self) -> Path:  # generation caches and synthetic hard negatives
        return self.processed / "synthesis"

    @property
    def shn(self) -> Path:  # the SHN triple files, one per split
        return self.synth / "shn"

    @property
    def profile_results(self) -> Path:  # small committed metric files (DVC metrics, cache: false)
        return self.root / "results" / self.profile

    @property
    def profile_reports(self) -> Path:  # executed notebooks and their HTML renderings
        return self.root / "reports" / self.profile

    @property
    def data_stats(self) -> Path:
        return self.profile_results / "data_stats.json"

    @property
    def synthesis_record(self) -> Path:
        return self.profile_results / "synthesis.json"

    @property
    def baselines(self) -> Path:
        return self.profile_results / "baselines.json"

    # per profile and backbone
    @property
    def prompts(self) -> Path:  # the PO method is the backbone's
        return self.processed / self.backbone / "prompts"

    @property
    def selected_prompts(self) -> Path:  # the prompts stage's selection
        return self.prompts / "selected.json"

    @property
    def artifacts(self) -> Path:  # adapters, checkpoints, merged models (DVC outputs, git-ignored)
        return self.root / "artifacts" / self.profile / self.backbone

    @property
    def experts(self) -> Path:  # main-line experts and FT-all: <expert>/adapter
        return self.artifacts / "experts"

    @property
    def ablations(self) -> Path:
        return self.artifacts / "ablations"

    @property
    def merged(self) -> Path:
        return self.artifacts / "merged"

    @property
    def results(self) -> Path:
        return self.root / "results" / self.profile / self.backbone

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    @property
    def reports(self) -> Path:
        return self.profile_reports / self.backbone

    @property
    def backbone_record(self) -> Path:
        return self.results / "backbone.json"

    @property
    def merging_record(self) -> Path:
        return self.results / "merging.json"

    def expert_dir(self, expert: str) -> Path:
        return self.experts / expert

    @property
    def expert_results(self) -> Path:  # one test record per main-line expert and FT-all
        return self.results / "experts"

    @property
    def ablation_results(self) -> Path:  # one record per ablation run (variant cells: also dev/)
        return self.results / "ablations"

    def expert_result(self, expert: str) -> Path:
        return self.expert_results / f"{expert}.json"

    def expert_variant(self, expert: str, variant: str) -> Path:
        """A main-line expert in another variant that a merge method takes (``merging.variants``), inside the
        expert's training-stage output: ``artifacts/<profile>/<backbone>/experts/<expert>/variants/<variant>``."""
        return self.expert_dir(expert) / "variants" / variant

    def ablation_dir(self, name: str) -> Path:
        return self.ablations / name

    def ablation_result(self, name: str) -> Path:
        """An ablation run ``kind/cell[/expert]`` -> ``results/.../ablations/kind_cell[/expert].json``."""
        return self.ablation_results / f"{name.replace('/', '_', 1)}.json"

    def relative(self, path: Path) -> str:
        """``path`` named from the repository root (what records and messages print)."""
        path = Path(path)
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)


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
