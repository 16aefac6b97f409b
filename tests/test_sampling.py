"""Seeded dev-set subsets for merge selection (the paper's "sampled subset of queries and documents")."""

import random

import pytest

from stm.config import DevSampleConfig
from stm.core import sampling
from stm.core.beir import read_beir, write_beir
from stm.core.tasks import TaskSpec, resolve
from stm.io import tree_hash
from tiny import WORDS


@pytest.fixture()
def big_task(tmp_path):
    rng = random.Random(0)
    corpus = {f"d{i}": " ".join(rng.sample(WORDS, 12)) for i in range(200)}
    queries = {f"q{i}": " ".join(corpus[f"d{i}"].split()[:4]) for i in range(30)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{100 + i}": 2} for i in range(30)}
    folder = write_beir(tmp_path / "big", corpus, queries, qrels, "dev", {"name": "Big", "instruction": "Find it"})
    return resolve(str(folder), None, "dev")


def test_a_sample_keeps_the_judged_documents_and_is_seeded(big_task, tmp_path):
    cfg = DevSampleConfig(queries=10, corpus=50, bm25_distractors=3, seed=1)
    spec = sampling.sample_task(big_task, cfg, tmp_path / "samples")
    data = read_beir(spec.folder, "dev")
    assert len(data.queries) == 10 and len(data.corpus) == 50
    assert all(d in data.corpus for q in data.queries for d in data.qrels[q])  # no judged document dropped
    assert spec.name == "Big" and spec.instruction == "Find it" and spec.split == "dev"
    # each query's BM25 top documents are in (hard distractors), not only random filler
    full = read_beir(big_task.folder, "dev")
    dids = list(full.corpus)
    top = sampling.bm25_topk([full.corpus[d] for d in dids], [full.queries[q] for q in data.queries], 3)
    assert all(dids[j] in data.corpus for row in top for j in row)
    # the same seed gives the same folder, byte for byte; another seed other queries
    again = sampling.sample_task(big_task, cfg, tmp_path / "again")
    assert tree_hash(again.folder) == tree_hash(spec.folder)
    other = sampling.sample_task(big_task, cfg.model_copy(update={"seed": 2}), tmp_path / "samples")
    assert set(read_beir(other.folder, "dev").queries) != set(data.queries)
    rec = sampling.sample_record(spec)
    assert rec["sampling"]["seed"] == 1 and rec["sizes"] == {"queries": 10, "corpus": 50, "source_queries": 30,
                                                            "source_corpus": 200}


def test_sampling_off_returns_the_tasks_themselves(big_task, tmp_path):
    assert sampling.sample_tasks([big_task], DevSampleConfig(), tmp_path / "samples") == [big_task]
    assert not (tmp_path / "samples").exists()


class _FakeMtebTask:
    """mteb's loaded layout: dataset[subset][split] = {corpus, queries, relevant_docs} (CUREv1: one subset each)."""

    def __init__(self):
        self.dataset = {}

    def load_data(self):
        for sub in ("dentistry", "neurology"):
            self.dataset[sub] = {"test": {
                "corpus": [{"id": "d1", "title": "Title", "text": f"{sub} text one"}, {"id": "d2", "text": "other"}],
                "queries": [{"id": "q1", "text": f"a {sub} question"}, {"id": "q9", "text": "unjudged"}],
                "relevant_docs": {"q1": {"d1": 1}},
            }}


def test_an_mteb_task_with_subsets_is_pooled_with_prefixed_ids(monkeypatch):
    monkeypatch.setattr(sampling, "to_mteb", lambda spec: _FakeMtebTask())
    spec = TaskSpec("CUREv1", "mteb", "medical", "Find", "test", eval_splits=("test",),
                    subsets=("dentistry", "neurology"))
    data = sampling.load_full(spec)
    assert data.qrels == {"dentistry/test/q1": {"dentistry/test/d1": 1}, "neurology/test/q1": {"neurology/test/d1": 1}}
    assert data.corpus["dentistry/test/d1"] == "Title dentistry text one" and len(data.corpus) == 4
    assert set(data.queries) == set(data.qrels)  # unjudged queries are not scored


def test_max_epochs_caps_the_steps_of_a_small_split_only():
    """training.max_epochs: the embedded Med-Synth (300 rows, batch 8) stops after two passes, 75 steps, while a
    1,200-row split keeps max_steps; no cap keeps the old schedule, and an epoch schedule is capped the same way."""
    assert sampling.training_steps(300, 8, 110, 1.0, 2.0) == 75
    assert sampling.training_steps(1200, 8, 110, 1.0, 2.0) == 110
    assert sampling.training_steps(300, 8, 110, 1.0, None) == 110
    assert sampling.training_steps(300, 8, None, 3.0, 2.0) == 75
    assert sampling.training_steps(3, 8, 10, 1.0, 2.0) == 1  # never zero steps
