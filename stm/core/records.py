"""The run's records, typed: what the stages write and the tables, claims and figures read.

Each record is a JSON file a stage writes. Its class validates it on ``load`` (a malformed file fails naming the
file and the field) and ``save`` writes it back as the stage wrote it: fields in the file's order, a field the file
left out still left out (tested byte for byte on the committed run). Identity is a field: an evaluation names its
model (``name``), its training (``train.expert``, ``train.variant``) or its merge (``merge.method``,
``merge.experts``), and :class:`Scored` gives each main-line model a ``role``; display labels are derived, never
matched.

:class:`MainLine` and :class:`Ablations` are a run's records as the report reads them, loaded from a
:class:`~stm.paths.Layout`; the figures and claims take them as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from stm.io import DataError, read_json, write_json
from stm.paths import Layout

EXPERT_LABELS = {"med_real": "Med-Real", "med_synth": "Med-Synth", "search": "Search", "nlu": "NLU", "all": "FT-all"}
BASELINE_LABELS = {"bm25": "BM25", "minilm": "all-MiniLM-L6-v2"}


class Record(BaseModel):
    """A JSON record: ``load`` validates, ``save`` writes the fields that were set, in declaration order."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def load(cls, path: Path | str) -> Self:
        try:
            return cls.model_validate(read_json(path))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise DataError(f"{path}: {cls.__name__} field {where!r}: {err['msg']}") from None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    def save(self, path: Path | str) -> Path:
        return write_json(path, self.dump())


class Trained(Record):
    """How an evaluated model was trained (an expert's or an ablation cell's ``model.train``; a variant cell's dev
    record names only expert and variant)."""

    steps: int | None = None
    final_loss: float | None = None
    query_truncated_fraction: float | None = None
    mean_tokens_per_s: float | None = None
    data: dict[str, Any] = {}  # the training files with their sha256, the prompts file (and its optimizer), rows
    variant: str
    expert: str

    @property
    def optimizer(self) -> str | None:
        """The prompt optimizer of the instructions trained with (``gp10``, ``gepa-light``), None without PO."""
        return (self.data.get("prompts") or {}).get("optimizer")

    @property
    def rows(self) -> int:
        return self.data["rows"]


class MergeChoice(Record):
    """The merge an evaluated model is: method, the chosen weights (in ``experts``' order), the dev score."""

    method: str
    weights: list[float]
    densities: list[float] | None
    score: float
    experts: list[str]


class Evaluation(Record):
    """One model scored on one split (``stm.core.evaluation.evaluate``): nDCG@10 and Recall@10 per task, the
    paper's averages, each query's nDCG@10, and everything that moves the numbers."""

    model: dict[str, Any]  # the retriever as scored (stm.core.retriever.describe), its name, train / merge below
    split: str
    tasks: dict[str, dict[str, Any]]  # each task's instruction and data hash
    scores: dict[str, dict[str, float]]
    averages: dict[str, float]
    recall_averages: dict[str, float]
    per_query_ndcg_at_10: dict[str, dict[str, float]]
    environment: dict[str, Any]
    evaluation_config: dict[str, Any] | None = None  # the scoring settings (absent from the baselines' records)

    @classmethod
    def path(cls, layout: Layout, role: str, name: str = "") -> Path:
        """Where the stage that scores a model of ``role`` writes its record: ``backbone``, ``expert`` (and
        ``ft_all``: ``name`` is the split), ``cell`` (an ablation cell: ``name`` like ``variant/shn/search``). A
        baseline's or a merge's record lives inside its stage's report (:class:`Baselines`, :class:`MergeReport`)."""
        if role == "backbone":
            return layout.backbone_record
        if role in ("expert", "ft_all"):
            return layout.expert_result(name)
        if role == "cell":
            return layout.ablation_result(name)
        raise ValueError(f"no record file of its own for role {role!r}: it lives in its stage's report")

    @property
    def name(self) -> str:
        return self.model["name"]

    @property
    def average(self) -> float:
        """Average nDCG@10 over the tasks, as the paper reports it."""
        return self.averages["all"]

    @property
    def queries(self) -> int:
        return sum(len(v) for v in self.per_query_ndcg_at_10.values())

    @cached_property
    def train(self) -> Trained | None:  # validated once per record: figures and claims read it in loops
        return Trained.model_validate(self.model["train"]) if "train" in self.model else None

    @cached_property
    def merge(self) -> MergeChoice | None:
        return MergeChoice.model_validate(self.model["merge"]) if "merge" in self.model else None


class Baselines(Record):
    """``results/<profile>/baselines.json``: BM25 and MiniLM on the test tasks (shared by every backbone)."""

    split: str
    baselines: dict[str, Evaluation]

    @classmethod
    def path(cls, layout: Layout) -> Path:
        return layout.baselines


class TrainingRecord(Record):
    """``<run folder>/train_record.json``: one training, as the training loop wrote it."""

    FILE: ClassVar[str] = "train_record.json"

    expert: str
    backbone: str
    retriever: dict[str, Any]
    variant: str
    steps: int
    world_size: int
    loss: dict[str, Any]
    config: dict[str, Any]  # the TrainingConfig that ran (stm.config.dump)
    data: dict[str, Any]
    final_loss: float | None
    query_truncated_fraction: float
    mean_tokens_per_s: float
    environment: dict[str, Any]

    @classmethod
    def path(cls, run_folder: Path | str) -> Path:
        return Path(run_folder) / cls.FILE

    def summary(self) -> dict[str, Any]:
        """What an evaluation of this training records as its ``model.train``."""
        return {k: getattr(self, k) for k in Trained.model_fields}


class Candidate(Record):
    """One scored point of a merge search: weights (in the report's ``experts`` order), TIES densities, dev score."""

    weights: list[float]
    densities: list[float] | None
    score: float


class MethodResult(Record):
    """One merge method of the merge report: every candidate the dev search scored, the choice, its test record."""

    history: list[Candidate]
    chosen: Candidate
    dev_score: float
    test: Evaluation
    variants: dict[str, str] | None = None  # experts this method takes in another variant (merging.variants)
    mergekit_config: dict[str, Any]
    seconds_per_candidate: float | None
    candidates_reused: int
    inmemory_vs_mergekit_max_abs_diff: float | None = None

    def weights(self, experts: list[str]) -> dict[str, float]:
        """The chosen weights by expert name: the order is the report's ``experts``, never assumed."""
        return dict(zip(experts, self.chosen.weights, strict=True))


class MergeReport(Record):
    """``results/<profile>/<backbone>/merging.json``: the merge stage's report."""

    experts: list[str]
    search: dict[str, Any]
    methods: dict[str, MethodResult]
    dev_tasks: dict[str, Any]

    @classmethod
    def path(cls, layout: Layout) -> Path:
        return layout.merging_record


class NotRun(Record):
    """An ablation cell the profile does not run, and why."""

    cell: str
    not_run: str


def load_evaluation(path: Path | str) -> Evaluation | NotRun:
    """An evaluation record, or an ablation cell's not-run marker."""
    raw = read_json(path)
    return (NotRun if isinstance(raw, dict) and "not_run" in raw else Evaluation).load(path)


# ------------------------------------------------------------------------------------------- a run's records
Role = Literal["baseline", "backbone", "expert", "ft_all", "merge"]


@dataclass(frozen=True)
class Scored:
    """One main-line model: its role, its name within the role (``bm25``, ``search``, ``ties``), its record."""

    role: Role
    name: str
    record: Evaluation

    @property
    def label(self) -> str:
        """The display name (tables, figures): derived from role and name, never used to find a model."""
        if self.role == "baseline":
            return BASELINE_LABELS.get(self.name, self.name)
        if self.role == "backbone":
            return "untrained backbone"
        if self.role == "merge":
            return f"STM {self.name}"
        return EXPERT_LABELS.get(self.name, self.name)


@dataclass(frozen=True)
class RunInfo:
    """What a figure's footnote says of the run: its folders' names and who wrote its hard negatives."""

    profile: str
    backbone: str
    negatives: str | None = None  # the synthesis stage's generator, "<kind>:<name>"

    @classmethod
    def of(cls, layout: Layout) -> RunInfo:
        gen = read_json(layout.synthesis_record).get("generator") if layout.synthesis_record.exists() else None
        return cls(layout.profile, layout.backbone, gen)


@dataclass(frozen=True)
class MainLine:
    """The main line's records of one run: baselines, the untrained backbone, experts and FT-all, the merges."""

    run: RunInfo
    baselines: dict[str, Evaluation] = field(default_factory=dict)
    backbone: Evaluation | None = None
    experts: dict[str, Evaluation] = field(default_factory=dict)  # by split name; "all" is FT-all
    merging: MergeReport | None = None

    @classmethod
    def load(cls, layout: Layout) -> MainLine:
        """What the baselines, backbone, train and merge stages of ``layout`` wrote (a stage not run: absent)."""
        baselines, backbone, merging = Baselines.path(layout), Evaluation.path(layout, "backbone"), \
            MergeReport.path(layout)
        return cls(
            run=RunInfo.of(layout),
            baselines=Baselines.load(baselines).baselines if baselines.exists() else {},
            backbone=Evaluation.load(backbone) if backbone.exists() else None,
            experts={p.stem: Evaluation.load(p) for p in sorted(layout.expert_results.glob("*.json"))},
            merging=MergeReport.load(merging) if merging.exists() else None)

    def models(self) -> list[Scored]:
        """Every model, in the report's order: baselines, backbone, experts, FT-all, merges."""
        out = [Scored("baseline", n, r) for n, r in self.baselines.items()]
        out += [Scored("backbone", "backbone", self.backbone)] if self.backbone is not None else []
        out += [Scored("ft_all" if n == "all" else "expert", n, r) for n, r in self.experts.items()]
        if self.merging is not None:
            out += [Scored("merge", m, e.test) for m, e in self.merging.methods.items()]
        return out

    def of(self, role: Role) -> list[Scored]:
        return [s for s in self.models() if s.role == role]

    def one(self, role: Role) -> Scored | None:
        return next(iter(self.of(role)), None)


def size_cell(index: int, seed_index: int) -> str:
    """The name of Figure 4's cell for training size ``index`` and seed ``seed_index`` (``size/<index>-<seed>``)."""
    return f"size/{index}-{seed_index}"


@dataclass(frozen=True)
class Cell:
    """One ablation cell's record: ``key`` is its file under ``results/.../ablations`` (``variant_shn/search``,
    ``size_0-1``), ``kind`` its table (variant, size, po, gepa, pretrain), ``split`` test or dev."""

    key: str
    kind: str
    split: str
    record: Evaluation | None
    not_run: str | None = None

    @property
    def name(self) -> str:
        """The cell within its kind: ``shn/search``, ``0-1``, ``pt_ft``, ``light``."""
        return self.key.removeprefix(f"{self.kind}_")

    @property
    def seed_index(self) -> int | None:
        """A size cell's seed index (``size_cell``'s second number); None for the other kinds."""
        return int(self.name.rsplit("-", 1)[1]) if self.kind == "size" else None


@dataclass(frozen=True)
class Ablations:
    """The ablation cells of one run (Tables 4 and 10, Figures 3 and 4), test and dev."""

    run: RunInfo
    cells: tuple[Cell, ...] = ()

    @classmethod
    def load(cls, layout: Layout) -> Ablations:
        folder, cells = layout.ablation_results, []
        for p in sorted(folder.rglob("*.json")) if folder.exists() else ():
            key = str(p.relative_to(folder).with_suffix(""))
            split = "dev" if "/dev/" in key else "test"
            key = key.replace("/dev/", "/")
            rec = load_evaluation(p)
            cells.append(Cell(key, key.split("_", 1)[0], split, rec if isinstance(rec, Evaluation) else None,
                              rec.not_run if isinstance(rec, NotRun) else None))
        return cls(RunInfo.of(layout), tuple(cells))

    def of(self, kind: str, split: str = "test") -> dict[str, Evaluation]:
        """{cell name: record} of the cells of ``kind`` that ran, on ``split``."""
        return {c.name: c.record for c in self.cells if c.kind == kind and c.split == split and c.record is not None}

    def by_seed(self) -> dict[int, dict[int, Evaluation]]:
        """Figure 4's test cells: {seed index: {training rows: record}}."""
        out: dict[int, dict[int, Evaluation]] = {}
        for c in self.cells:
            if c.kind == "size" and c.split == "test" and c.record is not None:
                out.setdefault(c.seed_index, {})[c.record.train.rows] = c.record
        return out

    def not_run(self, kind: str) -> dict[str, str]:
        """{cell name: reason} of the cells of ``kind`` the profile does not run."""
        return {c.name: c.not_run for c in self.cells if c.kind == kind and c.not_run is not None}
