"""Every task, declared once: the embedded PubMed tasks, the paper's MTEB tasks and dev sets, local BEIR folders.

The data stage writes the embedded tasks' folders from :data:`EMBEDDED_TASKS`; evaluation, prompt
optimization and merge search read them through :func:`resolve`. Every task carries the query
instruction used at test time (for the paper's 12 MTEB tasks, the per-task instructions of the
authors' evaluation config, digest section 5.2), and :meth:`TaskSpec.metadata` gives its mteb
``TaskMetadata``: mteb's own for registry tasks, one built here for local folders.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from stm.core.beir import read_beir, read_meta
from stm.io import tree_hash


SPLIT_INSTRUCTIONS = {
    "med_real": "Given the title of a biomedical article, retrieve the abstract of that article",
    "med_synth": "Given a biomedical question, retrieve PubMed abstracts that answer the question",
    "search": "Given a keyword search query, retrieve relevant biomedical abstracts",
    "nlu": "Given a scientific claim, retrieve the abstract that supports the claim",
}

EMBEDDED_TASKS = {
    "pubmed-keywords": {
        "instruction": "Given keywords from a biomedical article, retrieve the abstract of the article",
        "echoes": "keyword search (Search expert's domain)",
        "group": "medical",
    },
    "pubmed-claims": {
        "instruction": "Given a scientific claim, retrieve documents that support or refute the claim",
        "echoes": "SciFact",
        "group": "medical",
    },
    "pubmed-covid": {
        "instruction": "Given a query on COVID-19, retrieve documents that answer the query",
        "echoes": "TREC-COVID",
        "group": "medical",
    },
    "pubmed-mesh": {
        "instruction": "Given a question, retrieve relevant documents that best answer the question",
        "echoes": "NFCorpus (graded relevance)",
        "group": "medical",
    },
}


class TaskError(ValueError):
    pass


_Q_MED = "Given a question by a medical professional, retrieve relevant passages that best answer the question"
_Q_DOCS = "Given a question, retrieve relevant documents that best answer the question"
_CLAIM = "Given a claim, retrieve documents that support or refute the claim"
# name: (group, instruction, hf_subsets)
PAPER_TASKS: dict[str, tuple[str, str, list[str] | None]] = {
    "FeedbackQARetrieval": ("medical", _Q_MED, None),
    "MedicalQARetrieval": ("medical", _Q_MED, None),
    "CUREv1": ("medical", _Q_DOCS, ["en"]),
    "PublicHealthQA": ("medical", _Q_MED, ["english"]),
    "NFCorpus": ("medical", _Q_DOCS, None),
    "TRECCOVID": ("medical", "Given a query on COVID-19, retrieve documents that answer the query", None),
    "SciFact": ("medical", "Given a scientific claim, retrieve documents that support or refute the claim", None),
    "SCIDOCS": ("general", "Given a scientific paper title, retrieve paper abstracts that are cited by the given paper", None),
    "NanoFEVERRetrieval": ("general", _CLAIM, None),
    "ArguAna": ("general", "Given a claim, retrieve arguments that support or refute the claim", None),
    "NanoQuoraRetrieval": ("general", "Given a question, retrieve semantically similar questions", None),
    "FiQA2018": ("general", _Q_DOCS, None),
}
# The paper's merge-selection dev sets (official dev splits, sampled): not part of the 12 test tasks' averages.
PAPER_TASKS |= {
    "QuoraRetrieval": ("dev", "Given a question, retrieve questions that are semantically equivalent to the given question", None),
    "DBPedia": ("dev", "Given a query, retrieve relevant entity descriptions from DBPedia", None),
}
DEFAULT_INSTRUCTION = _Q_DOCS


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "embedded" | "beir" | "mteb"
    group: str
    instruction: str
    split: str
    folder: Path | None = None
    eval_splits: tuple[str, ...] = ()  # mteb tasks: every split mteb scores for ``split`` (CUREv1: its disciplines)
    subsets: tuple[str, ...] | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        return self.eval_splits or (self.split,)

    def metadata(self):
        """The task's mteb ``TaskMetadata``, with our instruction as its query prompt."""
        return to_mteb(self).metadata

    def record(self) -> dict:
        rec = {"name": self.name, "kind": self.kind, "group": self.group, "instruction": self.instruction,
               "split": self.split}
        if self.kind == "mteb":
            rec |= {"eval_splits": list(self.splits), "subsets": list(self.subsets) if self.subsets else None}
        if self.folder is not None:
            rec["data_hash"] = _data_hash(self.folder)
        return rec


# Merge search evaluates the same dev folders once per candidate: read and hash each folder once per process.
@lru_cache(maxsize=None)
def _data_hash(folder: Path) -> str:
    return tree_hash(folder)


@lru_cache(maxsize=None)
def _read(folder: Path, split: str):
    return read_beir(folder, split)


def read_task(spec: "TaskSpec"):
    """The corpus, queries and qrels of a local task (read once per process)."""
    return _read(spec.folder, spec.split)


def mteb_splits(name: str, split: str) -> tuple[str, ...]:
    """The splits mteb scores a task on: its metadata's ``eval_splits`` for the test role (NanoFEVER and NanoQuora
    have only ``train``, CUREv1's are its disciplines), the official ``dev`` split for merge selection."""
    import mteb

    if split == "dev":
        return ("dev",)
    return tuple(mteb.get_task(name).metadata.eval_splits)


def describe_tasks(names: list[str], root: Path, split: str = "test") -> list[dict]:
    """One row per task: group, the splits and subsets mteb scores, and the query instruction (offline)."""
    return [resolve(n, root, split).record() | {"role": split} for n in names]


def resolve(spec: str, root: Path | None, split: str = "test", task_data: str | Path | None = None) -> TaskSpec:
    """Map a task string to a :class:`TaskSpec`; an unknown name fails listing what is known.

    ``task_data``: a folder of local stand-ins for the MTEB tasks (the rehearsal); the task keeps mteb's metadata
    (splits, subsets), only its data is read from ``<task_data>/<name>/<subset>/``."""
    if spec in EMBEDDED_TASKS:
        if root is None:
            raise TaskError(f"embedded task {spec!r}: no task folder given (the run's data/processed/<profile>/tasks)")
        folder = Path(root) / split / spec
        if not folder.exists():
            raise TaskError(f"embedded task {spec!r} ({split}) not built yet: {folder} missing; run the data stage")
        info = EMBEDDED_TASKS[spec]
        return TaskSpec(spec, "embedded", info["group"], info["instruction"], split, folder)
    if spec in PAPER_TASKS:
        group, instruction, subsets = PAPER_TASKS[spec]
        folder = None
        if task_data is not None:
            folder = Path(task_data) / spec
            if not folder.is_dir():
                raise TaskError(f"task {spec!r}: no local stand-in at {folder} (evaluation.task_data)")
        return TaskSpec(spec, "mteb", group, instruction, split, folder, eval_splits=mteb_splits(spec, split),
                        subsets=tuple(subsets) if subsets else None)
    folder = Path(spec)
    if folder.is_dir() and (folder / "corpus.jsonl").exists():
        meta = read_meta(folder)
        return TaskSpec(meta.get("name", folder.name), "beir", meta.get("group", "local"),
                        meta.get("instruction", DEFAULT_INSTRUCTION), split, folder)
    raise TaskError(
        f"unknown task {spec!r}: not an embedded task {sorted(EMBEDDED_TASKS)}, not one of the paper's MTEB tasks "
        f"{sorted(PAPER_TASKS)}, and not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"
    )


def to_mteb(task: TaskSpec):
    """An mteb task object: a local-data subclass for folders, the registry task for MTEB names."""
    import mteb

    if task.kind == "mteb":
        t = mteb.get_task(task.name, eval_splits=list(task.splits),
                          hf_subsets=list(task.subsets) if task.subsets else None)
        t.metadata = t.metadata.model_copy(update={"prompt": {"query": task.instruction}})
        if task.folder is not None:  # a local stand-in: mteb's task and metadata, our data
            t.load_data = _stand_in_loader(t, task)
        return t
    return _local_task(task)


def mteb_subsets(task: TaskSpec) -> list[str]:
    """The hf_subsets mteb scores for an MTEB task ("default" for a task without subsets)."""
    t = to_mteb(replace(task, folder=None))
    return list(t.hf_subsets) if t.metadata.is_multilingual else ["default"]


def _stand_in_loader(t, task: TaskSpec):
    """``load_data`` for an mteb task whose data is ``<folder>/<subset>/`` BEIR folders, one qrels file per split."""
    import datasets

    def load_data(**kwargs):
        t.dataset = {}
        for subset in (t.hf_subsets if t.metadata.is_multilingual else ["default"]):
            for split in task.splits:
                folder = task.folder / subset
                if not (folder / "qrels" / f"{split}.tsv").exists():
                    raise TaskError(f"task {task.name!r}: stand-in {folder} has no qrels/{split}.tsv "
                                    f"(mteb scores subset {subset!r}, split {split!r})")
                data = read_beir(folder, split)
                t.dataset.setdefault(subset, {})[split] = {
                    "corpus": datasets.Dataset.from_dict({"id": list(data.corpus), "text": list(data.corpus.values())}),
                    "queries": datasets.Dataset.from_dict({"id": list(data.queries),
                                                           "text": list(data.queries.values())}),
                    "relevant_docs": data.qrels, "top_ranked": None}
        t.data_loaded = True

    return load_data


def _local_task(task: TaskSpec):
    import datasets
    from mteb.abstasks import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    data = _read(task.folder, task.split)

    class LocalBeirTask(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=task.name,
            dataset={"path": f"local/{task.name}", "revision": task.record().get("data_hash", "local")},
            description=f"Local BEIR folder {task.folder}",
            type="Retrieval",
            modalities=["text"],
            category="t2t",
            reference=None,
            eval_splits=[task.split],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=None,
            domains=["Medical"],
            task_subtypes=[],
            license="not specified",
            annotations_creators="derived",
            dialect=[],
            sample_creation="found",
            bibtex_citation="",
            prompt={"query": task.instruction},
        )

        def load_data(self, **kwargs):
            corpus = datasets.Dataset.from_dict({"id": list(data.corpus), "text": list(data.corpus.values())})
            queries = datasets.Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())})
            self.dataset = {"default": {task.split: {"corpus": corpus, "queries": queries,
                                                     "relevant_docs": data.qrels, "top_ranked": None}}}
            self.data_loaded = True

    return LocalBeirTask()
