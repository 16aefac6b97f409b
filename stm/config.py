"""Typed, validated configuration between ``params.yaml`` and the code.

``params.yaml`` has two top-level keys that name a run, ``profile`` and ``backbone`` (``dvc.yaml`` puts both in the
output paths, so runs never overwrite each other: ``stm.paths``), one group per stage holding the default
``embedded`` values, and a top-level ``profiles:`` mapping with one block per profile (``smoke``, ``paper``,
``rehearsal``), each a mapping of group -> overrides. A top-level ``backbones:`` mapping holds per-backbone presets
(Table 9's learning rate and batch, Table 6's expert variants, the PO method): ``backbone`` picks one (one key
switches backbone), whose values sit between a group's own values and the profile's overrides. A stage resolves only
its own groups, and DVC tracks ``profiles.<profile>.<group>`` for the active profile only, so editing one profile
reruns only its stages. The rehearsal inherits the paper block through YAML merge keys, which both DVC and this
loader see resolved. Every group is a pydantic model with ``extra="forbid"`` and no defaults: ``params.yaml`` writes every setting that
runs (a test checks each leaf is there), and the models only validate; an unknown key, a missing one, a wrong type
or an impossible value fails at once with the file and the dotted key named. (The settings' own classes, such as
``FormatConfig``, keep library defaults for code that builds one by hand; a run never reaches them.)"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stm import paths
from stm.io import read_text_utf8

PROFILES = ("embedded", "smoke", "paper", "rehearsal")
PRESET_GROUPS = ("training", "prompts", "merging")  # what a backbone preset (params.yaml `backbones:`) may set
SPLIT_NAMES = ("med_real", "med_synth", "search", "nlu")
EXPERTS = (*SPLIT_NAMES, "all")
VARIANTS = ("ft", "shn", "po", "shn_po")  # Table 4: fine-tuning, + synthetic hard negatives, + optimized prompts, both
Variant = Literal[VARIANTS]
MERGE_METHODS = ("linear", "ties", "task_arithmetic", "dare_ties")  # stm.merging.methods.MERGE_METHODS implements them
BASELINES = ("bm25", "minilm")  # stm.core.evaluation.BASELINES implements them


def uses_shn(variant: str) -> bool:
    """The variant trains on the synthetic hard negatives (the one place a variant's name is read)."""
    return variant in ("shn", "shn_po")


def uses_po(variant: str) -> bool:
    """The variant draws each query's instruction from the optimized prompts."""
    return variant in ("po", "shn_po")


def native_bf16() -> bool:
    """bf16 runs natively here: on a GPU, or on a CPU with AMX-BF16 tiles or AVX512-BF16 dot products.

    Measured on 2 cores (``benchmarks/profile_step.py``, ``benchmarks/scoring_dtype.py``): with AMX (Intel Xeon,
    ``profile_step_amx.json``) a 1024x1024 bf16 matmul runs at 3.9x fp32, scoring at 2.2-3.4x and a training step
    at 1.34x; with AVX512-BF16 and no AMX (AMD EPYC Zen 4, 2026-12-06) a 2048x2048 matmul at 2.7x (395 against 147
    GFLOP/s) and a forward of 32 passages x 128 tokens through the 12-layer embedded model at 1.8x (1.33-1.48 s
    against 2.37-3.04 s); with AVX-512F alone (``profile_step.json``) bf16 is emulated and a step runs at 0.40x."""
    import torch  # only for ``auto``: validating a config needs no torch otherwise

    return bool(torch.cuda.is_available() or torch.cpu._is_amx_tile_supported()
                or torch.cpu._is_avx512_bf16_supported())


def resolve_dtype(name: str) -> str:
    """The one place that reads ``dtype: auto``: bfloat16 where it is native (:func:`native_bf16`), else float32.
    A config keeps the resolved name, so records show what ran."""
    if name != "auto":
        return name
    return "bfloat16" if native_bf16() else "float32"


Dtype = Annotated[Literal["auto", "float32", "bfloat16", "float16"], AfterValidator(resolve_dtype)]


class ConfigError(ValueError):
    """A bad value in a params file; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------- assets
class AssetsConfig(Strict):
    backbones: list[str] = Field(description="Backbone ids: an embedded asset id (smollm2, gemma3-270m) or a HF "
                                             "hub id / local path.")
    extra: list[str] = Field(description="Non-backbone assets to fetch.")
    hub_standins: str | None = Field(description="Folder of local stand-ins (<backbone>/) copied in "
                                     "place of the paper backbones' hub downloads (the rehearsal); null: the hub.")


# ------------------------------------------------------------------------------------------- data
class GenerationConfig(Strict):
    """Decoding settings of a generator; recorded next to every generation."""

    kind: Literal["local", "openai"] = "local"
    model: str = "smollm2"
    style: Literal["auto", "chat", "completion"] = Field(
        default="auto", description="auto: chat template when the model has one; completion: raw few-shot text."
    )
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint (kind=openai).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Environment variable holding the key.")
    batch_size: int = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    seed: int = 13
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, description="Retries per request on 408/409/429/5xx and lost "
                             "connections, with exponential back-off that honours Retry-After (the openai client's).")
    concurrency: int = Field(default=1, ge=1, description="Requests in flight at once (kind=openai).")
    dtype: Dtype = Field(default="float32", validate_default=True, description="kind=local: the model's dtype; "
                         "float32 gives the same generations on any CPU (greedy bf16 and fp32 decoding differ), "
                         "auto: bf16 where it is native (resolve_dtype).")


class EvalSetConfig(Strict):
    corpus_size: int = Field(default=600, ge=10, description="Abstracts per evaluation corpus.")
    test_queries: int = Field(default=120, ge=5)
    dev_queries: int = Field(default=60, ge=5)


class DataConfig(Strict):
    source: Literal["pubmed", "bmretriever"]
    seed: int
    split_sizes: dict[str, int] = Field(description="Triples per expert split.")
    miner: Literal["bm25", "minilm"]
    mine_top_k: int = Field(ge=2)
    dev_rows: int = Field(ge=0, description="Rows per split held out (splits_dev/) for prompt optimization.")
    max_passage_words: int = Field(ge=20)
    eval: EvalSetConfig
    med_synth_generator: GenerationConfig
    med_synth_abstract_words: int = Field(ge=10, description="Abstract words shown to the question writer.")
    med_synth_min_shared_terms: int = Field(ge=0, description="A written question is kept only if it shares at "
                                            "least this many content words (4+ letters) with the abstract words the "
                                            "writer read; 0: no check.")
    bmretriever_path: str | None = Field(description="paper profile: local ft_data.json, else the hub dataset is used.")
    split_patterns: list[tuple[str, Literal["med_real", "med_synth", "search", "nlu"]]] | None = Field(
        description="paper profile: [regex on the instruction, split] pairs, first match wins (null: "
                    "stm/data/bmretriever.py's table; unmatched rows are Med-Synth).")
    split_tolerance: float | None = Field(ge=0, description="paper profile: largest relative gap of "
                                          "a split's share to Table 2's (null: no check).")
    max_bad_rows: int = Field(ge=0, description="paper profile: rows of ft_data.json that cannot be "
                              "read as triples are counted and skipped, up to this many; one more stops the stage.")

    @field_validator("split_sizes")
    @classmethod
    def _splits(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = set(v) - set(SPLIT_NAMES)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {list(SPLIT_NAMES)}")
        if any(n < 0 for n in v.values()):
            raise ValueError("split sizes must be >= 0")
        return v


# ------------------------------------------------------------------------------------- evaluation
class FormatConfig(Strict):
    """How text reaches the encoder: recorded in every result file."""

    query_template: str = "{instruction}\nQuery: {query}"
    passage_template: str = "Represent this passage\npassage: {passage}"
    pooling: Literal["lasttoken", "mean"] = "lasttoken"
    include_prompt: bool = Field(
        default=True, description="False: mean pooling leaves the prompt's (instruction's) tokens out.")
    padding_side: Literal["left", "right"] = "left"
    max_query_tokens: int = Field(default=64, ge=8)
    max_passage_tokens: int = Field(default=160, ge=16)

    @field_validator("query_template")
    @classmethod
    def _qt(cls, v: str) -> str:
        if "{query}" not in v:
            raise ValueError("query_template must contain {query}")
        return v

    @field_validator("passage_template")
    @classmethod
    def _pt(cls, v: str) -> str:
        if "{passage}" not in v:
            raise ValueError("passage_template must contain {passage}")
        return v


class EvaluationConfig(Strict):
    tasks: list[str] = Field(min_length=1, description="Embedded task names, MTEB task names, or paths to local "
                                                       "BEIR folders.")
    split: Literal["test", "dev"]
    baselines: list[Literal[BASELINES]]
    batch_size: int = Field(ge=1)
    dtype: Dtype
    task_data: str | None = Field(description="Folder of local stand-ins for the MTEB tasks "
                                "(<task>/<subset>/ BEIR folders, qrels per split); null: mteb loads them from the hub.")
    prefix_cache: bool = Field(description="Cache the hidden states of the decoder layers that LoRA "
                             "leaves frozen, once per run (.cache/prefix; stm/core/prefix.py): exact, a speed-up only.")


# -------------------------------------------------------------------------------------- synthesis
class SynthesisConfig(Strict):
    generator: GenerationConfig
    splits: list[str]
    rows_per_split: int | None = Field(ge=1, description="Cap on rows to rewrite (None: all).")
    rows: Literal["trained", "first"] = Field(description="trained: the rows the split's expert "
                                              "sees in training, in the order it first sees them (training.batch_size, "
                                              "max_steps, seed); first: the split's first rows.")
    mode: Literal["replace", "add"]
    min_words: int = Field(ge=1)
    max_words: int = Field(ge=2)
    max_similarity: float = Field(gt=0, le=1, description="Reject near-copies above this ratio.")
    released: str | None = Field(description="Released synthetic negatives (jsonl/parquet path or hub "
                                 "id, keyed by bmretriever_index): rows take them and nothing is generated.")

    @model_validator(mode="after")
    def _words(self) -> "SynthesisConfig":
        if self.min_words >= self.max_words:
            raise ValueError("min_words must be < max_words")
        return self


# ---------------------------------------------------------------------------------------- prompts
GEPA_BUDGETS = ("light", "medium", "heavy")  # Table 8's levels
GepaBudget = Literal[GEPA_BUDGETS]


class GepaConfig(Strict):
    budget: GepaBudget = "light"
    max_metric_calls: int | None = Field(default=None, ge=1, description="Overrides the budget's call count.")
    train_examples: int | None = Field(default=None, ge=1)
    reflection_minibatch_size: int | None = Field(default=None, ge=1)
    seed: str = Field(default="data", min_length=1, description="GEPA's starting prompt: 'data' for the split's own "
                      "(most frequent) instruction, as the paper seeds it; any other text is used as is.")


class PromptsConfig(Strict):
    optimizer: Literal["none", "gp", "gepa"]
    gp_sizes: list[int]
    gp_size: int = Field(ge=1, description="Pool size used by the PO variant.")
    gp_max_words: int = Field(ge=5, description="Longest generic prompt kept (its first sentence).")
    gp_as_generated: bool = Field(description="Keep each generic prompt whole, as the generator wrote "
                                  "it (the paper); false: its first sentence, with meta-commentary filtered out.")
    splits: list[str]
    generator: GenerationConfig
    gepa: GepaConfig
    seed: int

    @model_validator(mode="after")
    def _gp(self) -> "PromptsConfig":
        if self.gp_size not in self.gp_sizes:
            raise ValueError(f"gp_size {self.gp_size} must be one of gp_sizes {self.gp_sizes}")
        return self


# --------------------------------------------------------------------------------------- training
class LoraSettings(Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    layers: int | None = Field(default=None, ge=1, description="LoRA on the top this many decoder layers only (the "
                             "backward stops there and the frozen bottom is cached for evaluation); null: every layer.")


class TrainingConfig(Strict):
    backbone: str = Field(description="params.yaml's top-level `backbone` (load() fills it in).")
    variant: Variant = Field(description="Variant of an expert that `variants` does not name.")
    variants: dict[str, Variant] = Field(description="Per-expert variant (Table 6: the best variant of each expert "
                                                     "enters the merge).")
    po_pool: int | None = Field(ge=1, description="PO from the GP-N pool of this size (Table 10); None: "
                                                  "prompts/selected.json.")
    prompts_file: str | None = Field(description="PO from this selection file (Table 10's GEPA rows); "
                                     "None: the prompts stage's prompts/selected.json.")
    lora: LoraSettings
    learning_rate: float = Field(gt=0, lt=1)
    weight_decay: float = Field(ge=0)
    warmup_steps: int = Field(ge=0)
    batch_size: int = Field(ge=2, description="Global batch (triples per step).")
    max_steps: int | None = Field(ge=1, description="None: one epoch.")
    epochs: float = Field(gt=0)
    max_epochs: float | None = Field(gt=0, description="At most this many passes over a split, whatever max_steps "
                                                       "says; None: no cap.")
    max_train_rows: int | None = Field(ge=2, description="Subsample a split (Figure 4).")
    train_file: str | None = Field(description="Train on this triple file instead of the expert's split.")
    init_adapter: str | None = Field(description="Start from this LoRA adapter (PT+FT, Figure 3).")
    temperature: float = Field(gt=0, le=1)
    hard_negatives_in_denominator: Literal["own", "all"] = Field(
        description="own: the paper's formula (only q_i's hard negative); all: every hard negative in the batch "
                    "(MNRL).")
    use_hard_negatives: bool = Field(description="False: in-batch negatives only.")
    gather_across_devices: bool
    processes: int | Literal["auto"] = Field(description="Training processes a stage launches: auto, "
                                             "one per GPU when there are several; 1: in-process.")
    bidirectional: bool
    gradient_checkpointing: bool
    mini_batch_size: int | None = Field(ge=1, description="GradCache: the loss over the whole batch, "
                                        "activations for this many rows per process at a time (null: all at once).")
    dtype: Dtype
    checkpoint_every: int = Field(ge=1)
    max_grad_norm: float | None = Field(gt=0)
    seed: int
    train_passage_tokens: int | None = Field(ge=16, description="Passage token limit in training "
                                             "only (null: format.max_passage_tokens); evaluation and the saved "
                                             "model keep format.max_passage_tokens.")
    format: FormatConfig

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(v) - set(SPLIT_NAMES) - {"all"})
        if bad:
            raise ValueError(f"unknown expert(s) {bad}; experts are {[*SPLIT_NAMES, 'all']}")
        return v

    @field_validator("processes")
    @classmethod
    def _processes(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("processes is 'auto' or a number >= 1")
        return v

    def variant_for(self, expert: str) -> str:
        return self.variants.get(expert, self.variant)


# ---------------------------------------------------------------------------------------- merging
class MergeSearchConfig(Strict):
    strategy: Literal["grid", "random", "cmaes"] = "grid"
    budget: int = Field(default=4, ge=1, description="Candidates scored per method.")
    alphas: list[float] = [round(0.1 * i, 1) for i in range(10)]
    densities: list[float] = [round(0.1 * i, 1) for i in range(1, 10)]
    ndcg_weight: float = Field(
        default=0.5, ge=0, le=1, description="score = w * nDCG@10 + (1 - w) * Recall@10, averaged over dev tasks."
    )
    seed: int = 13

    @field_validator("alphas", "densities")
    @classmethod
    def _unit(cls, v: list[float]) -> list[float]:
        if not v or any(x < 0 or x > 1 for x in v):
            raise ValueError("values must lie in [0, 1]")
        return v


class DevSampleConfig(Strict):
    """The seeded subset of each dev task that merge candidates are scored on (null sizes: the whole task)."""

    queries: int | None = Field(default=None, ge=1, description="Queries drawn per dev task; null: all.")
    corpus: int | None = Field(default=None, ge=1, description="Documents kept (judged + distractors + random fill); "
                               "null: the whole corpus.")
    bm25_distractors: int = Field(default=0, ge=0, description="Top BM25 documents kept per sampled query.")
    seed: int = 13


class MergingConfig(Strict):
    methods: list[Literal[MERGE_METHODS]]
    experts: list[str]
    dev_tasks: list[str] | None = Field(description="None: the evaluation tasks' dev splits.")
    dev_sample: DevSampleConfig
    search: MergeSearchConfig
    budgets: dict[str, int] = Field(description="Per-method budget overrides (mergekit-scored methods are slow).")
    variants: dict[str, dict[str, Variant]] = Field(
        description="Per method, the experts it merges in another variant than training.variants' (Table 6's "
               "footnote: Phi-4-mini's Linear merge used Med-Real PO); each expert's training stage also trains these.")
    dtype: Dtype  # the merge arithmetic (mergekit)

    @field_validator("experts")
    @classmethod
    def _experts(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in SPLIT_NAMES]
        if bad or len(v) < 2:
            raise ValueError(f"need at least two experts from {list(SPLIT_NAMES)}; got {v}")
        return v

    @model_validator(mode="after")
    def _variants(self) -> "MergingConfig":
        for method, by_expert in self.variants.items():
            if method not in self.methods:
                raise ValueError(f"variants.{method}: not one of methods {self.methods}")
            bad = sorted(set(by_expert) - set(self.experts))
            if bad:
                raise ValueError(f"variants.{method}: {bad} are not merged experts {self.experts}")
        return self

    def merge_variants(self, expert: str) -> list[str]:
        """The variants of ``expert`` that some method merges in place of its training stage's own (sorted)."""
        return sorted({v[expert] for v in self.variants.values() if expert in v})


# -------------------------------------------------------------------------------------- ablations
class AblationsConfig(Strict):
    variant_experts: list[str] = Field(min_length=1, description="Experts trained in every variant (Table 4: all four "
                                                                 "and FT-all).")
    variants: list[Variant]
    sizes: list[int | None] = Field(description="Rows of the union (Figure 4); null: all.")
    seeds: list[int]
    size_expert: str
    steps: int | None = Field(ge=1, description="Steps per cell; null: the training schedule (epochs).")
    po_expert: str = Field(description="The expert of Table 10's cells (the paper: FT-all).")
    gepa_budgets: list[GepaBudget] = Field(description="Table 10's GEPA rows: the budgets whose cells "
                                           "optimize and train (the paper: light, medium, heavy); a cell of another "
                                           "budget writes a record that says it was not run.")
    eval_dtype: Dtype | None = Field(description="The dtype the cells are scored in (null: "
                                     "evaluation.dtype). The cells compare only with each other.")

    @field_validator("variant_experts", "po_expert")
    @classmethod
    def _experts(cls, v: list[str] | str) -> list[str] | str:
        names = {v} if isinstance(v, str) else set(v)
        bad = sorted(names - set(SPLIT_NAMES) - {"all"})
        if bad:
            raise ValueError(f"unknown expert(s) {bad}; experts are {[*SPLIT_NAMES, 'all']}")
        return v

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int | None]) -> list[int | None]:
        if any(n is not None and n < 2 for n in v):
            raise ValueError("a size is a number of rows >= 2, or null for all rows")
        return v


GROUPS: dict[str, type[Strict]] = {
    "assets": AssetsConfig,
    "data": DataConfig,
    "evaluation": EvaluationConfig,
    "synthesis": SynthesisConfig,
    "prompts": PromptsConfig,
    "training": TrainingConfig,
    "merging": MergingConfig,
    "ablations": AblationsConfig,
}


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_params(path: Path | None = None) -> dict[str, Any]:
    path = Path(path or paths.PARAMS)
    try:
        raw = yaml.safe_load(read_text_utf8(path)) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def active_profile(raw: dict[str, Any], path: Path | str = "params.yaml") -> str:
    profile = raw.get("profile", "embedded")
    if profile not in PROFILES:
        raise ConfigError(f"{path}: profile: {profile!r} is not one of {list(PROFILES)}")
    return profile


def active_backbone(raw: dict[str, Any], path: Path | str = "params.yaml") -> str:
    """The top-level ``backbone``: a preset of ``backbones:``, an embedded asset id, a hub id or a model folder."""
    backbone = raw.get("backbone", "smollm2")
    if not isinstance(backbone, str) or not backbone:
        raise ConfigError(f"{path}: backbone: {backbone!r} must be a preset of `backbones:`, an asset id, a hub id "
                          "or a model folder")
    return backbone


def check_run(profile: str, backbone: str, path: Path | str = "params.yaml") -> tuple[str, str]:
    """A run's (profile, backbone), validated: what ``dvc.yaml`` names the outputs by, so the backbone must be a
    relative name there (``artifacts/<profile>/<backbone>``)."""
    profile, backbone = active_profile({"profile": profile}, path), active_backbone({"backbone": backbone}, path)
    if backbone.startswith(("/", "~")) or ".." in backbone.split("/"):
        raise ConfigError(f"{path}: backbone: {backbone!r} names the output folders (artifacts/{profile}/<backbone>): "
                          "use a relative name (a preset, an asset id, a hub id, or a model folder inside the "
                          "repository such as data/assets/models/<name>)")
    return profile, backbone


def active_run(path: Path | None = None) -> tuple[str, str]:
    """(profile, backbone) of ``params.yaml``, validated (``check_run``)."""
    path = Path(path or paths.PARAMS)
    raw = read_params(path)
    return check_run(raw.get("profile", "embedded"), raw.get("backbone", "smollm2"), path)


@dataclass(frozen=True)
class Run:
    """One run: its profile and backbone (validated), the params file its groups resolve from, and its folders
    (``run.paths``, a ``stm.paths.Layout``). Built once, by the CLI from ``params.yaml`` or by a notebook from its
    papermill parameters (``Run.of``), and passed explicitly: no stage falls back to an ambient run."""

    profile: str
    backbone: str
    params: Path = paths.PARAMS

    @classmethod
    def of(cls, profile: str | None = None, backbone: str | None = None, params: Path | None = None) -> Run:
        """The run ``params`` names (``params.yaml``), with ``profile`` / ``backbone`` in place of its keys where
        given: a notebook's parameters, or ``python -m stm notebook -p profile=...``."""
        params = Path(params or paths.PARAMS)
        file_profile, file_backbone = active_run(params)
        return cls(*check_run(profile or file_profile, backbone or file_backbone, params), params)

    @property
    def paths(self) -> paths.Layout:
        return paths.Layout(self.profile, self.backbone, paths.ROOT)

    def load(self, group: str, **overrides: Any):
        """One params group resolved for this run (``load``)."""
        return load(group, self.params, self.profile, self.backbone, **overrides)


def load(group: str, path: Path | None = None, profile: str | None = None, backbone: str | None = None,
         **overrides: Any):
    """Resolve and validate one group: ``load("training")`` -> ``TrainingConfig``; ``profile`` and ``backbone``
    default to the file's top-level keys."""
    path = Path(path or paths.PARAMS)
    if group not in GROUPS:
        raise ConfigError(f"unknown params group {group!r}; expected one of {list(GROUPS)}")
    return _resolve(read_params(path), group, path, profile, backbone, overrides)


def check_params(path: Path | None = None) -> None:
    """Validate everything that could run before anything runs: every group as merged for every profile (with the
    active backbone), and every backbone preset's groups under the active profile. A typo in a block the active
    profile does not use (the paper block, which the rehearsal inherits), or a group's value that the active profile
    happens to override, fails here naming profile and key, not when that profile is first run."""
    path = Path(path or paths.PARAMS)
    raw = read_params(path)
    profile = active_profile(raw, path)
    for p in PROFILES:
        for group in GROUPS:
            _resolve(raw, group, path, p, None, {})
    for backbone in raw.get("backbones") or {}:
        for group in PRESET_GROUPS:
            _resolve(raw, group, path, profile, backbone, {})


def _resolve(raw: dict, group: str, path: Path, profile: str | None, backbone: str | None, overrides: dict):
    """One group of the parsed file: its own values, the backbone preset, the profile block, then ``overrides``."""
    unknown = set(raw) - set(GROUPS) - {"profile", "backbone", "profiles", "backbones"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    profile = profile or active_profile(raw, path)
    backbone = backbone or active_backbone(raw, path)
    preset = backbone_preset(raw, path, backbone).get(group, {})
    own, block = _section(raw, group, path), profile_overrides(raw, profile, group, path)
    if group == "training":
        for where, values in (("training", own), (f"profiles.{profile}.training", block),
                              (f"backbones.{backbone}.training", preset)):
            if "backbone" in values:
                raise ConfigError(f"{path}: {where}.backbone: the backbone is the top-level `backbone:` key (dvc.yaml "
                                  "names the output folders by it); set it there")
        overrides = {"backbone": backbone, **overrides}
    resolved = _deep_merge(_deep_merge(_deep_merge(own, preset), block), overrides)
    return validate(group, resolved, source=f"{path} (profile {profile}, backbone {backbone})")


def _section(raw: dict, group: str, path) -> dict:
    """A group's own values: the ``embedded`` profile's."""
    section = raw.get(group) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: {group}: must be a mapping")
    if "profiles" in section:
        raise ConfigError(f"{path}: {group}.profiles: a profile's overrides live in the top-level `profiles:` block "
                          f"(profiles.<profile>.{group}), not inside the group")
    return dict(section)


def profile_overrides(raw: dict, profile: str, group: str, path="params.yaml") -> dict:
    """``profiles.<profile>.<group>``: one profile's overrides of one group (none when the block does not name it)."""
    blocks = raw.get("profiles") or {}
    if not isinstance(blocks, dict):
        raise ConfigError(f"{path}: profiles: must be a mapping of profile -> group -> overrides")
    bad = sorted(set(blocks) - set(PROFILES))
    if bad:
        raise ConfigError(f"{path}: profiles: unknown profile(s) {bad}; expected some of {list(PROFILES)}")
    for name, block in blocks.items():  # every block: a typo in another profile fails now, not when it is run
        if not isinstance(block or {}, dict):
            raise ConfigError(f"{path}: profiles.{name}: must be a mapping of group -> overrides")
        bad = sorted(set(block or {}) - set(GROUPS))
        if bad:
            raise ConfigError(f"{path}: profiles.{name}: unknown group(s) {bad}; expected some of {list(GROUPS)}")
        for g, overrides in (block or {}).items():
            if not isinstance(overrides or {}, dict):
                raise ConfigError(f"{path}: profiles.{name}.{g}: must be a mapping")
    return (blocks.get(profile) or {}).get(group) or {}


def backbone_preset(raw: dict, path, backbone: str) -> dict[str, dict]:
    """The ``backbones:`` entry of ``backbone`` (Table 9's LR and batch, Table 6's variants, the PO method): the
    values it sets override the groups' own, and a profile's explicit values override it (none: no preset)."""
    presets = raw.get("backbones") or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"{path}: backbones: must be a mapping of backbone -> group overrides")
    preset = presets.get(backbone) or {}
    bad = sorted(set(preset) - set(PRESET_GROUPS))
    if bad:
        raise ConfigError(f"{path}: backbones.{backbone}: unknown group(s) {bad}; a preset sets {list(PRESET_GROUPS)}")
    return preset


def validate(group: str, values: dict[str, Any], source: str = "<dict>"):
    try:
        return GROUPS[group].model_validate(values)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(p) for p in (group, *err["loc"]))
            lines.append(f"{source}: {key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def dump(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
