"""Typed records: every committed result file loads as its record and saves back byte for byte; a malformed one
fails naming the file and the field; the report's collections find models by role and cells by name."""

import json

import pytest

from stm import paths
from stm.core.records import (Ablations, Baselines, Evaluation, MainLine, MergeReport, TrainingRecord,
                              load_evaluation)
from stm.io import DataError
from stm.paths import Layout

COMMITTED = Layout("embedded", "smollm2-12l", paths.ROOT)


def _load(path):
    if path.name == "baselines.json":
        return Baselines.load(path)
    if path.name == "merging.json":
        return MergeReport.load(path)
    return load_evaluation(path)  # an evaluation, or a cell's not-run marker


def test_every_committed_record_loads_and_saves_back_byte_for_byte(tmp_path):
    files = [p for p in [COMMITTED.baselines, COMMITTED.backbone_record, COMMITTED.merging_record,
                         *COMMITTED.expert_results.glob("*.json"), *COMMITTED.ablation_results.rglob("*.json")]
             if p.exists()]
    assert len(files) >= 10, "the committed run's records are missing"
    for p in files:
        out = _load(p).save(tmp_path / "copy.json")
        assert out.read_bytes() == p.read_bytes(), p


def test_the_committed_run_reads_as_typed_collections():
    main, ablations = MainLine.load(COMMITTED), Ablations.load(COMMITTED)
    roles = {(m.role, m.name) for m in main.models()}
    assert {("backbone", "backbone"), ("ft_all", "all"), ("expert", "search"), ("merge", "ties"),
            ("baseline", "bm25")} <= roles
    ties = next(m for m in main.of("merge") if m.name == "ties")
    assert ties.record.merge.method == "ties" and ties.record.merge.experts == main.merging.experts
    search = main.experts["search"].train
    assert search.expert == "search" and search.variant == main.experts["search"].model["train"]["variant"]
    variants = ablations.of("variant")
    assert variants and all(k == f"{r.train.variant}/{r.train.expert}" for k, r in variants.items())
    assert set(ablations.of("variant", "dev")) == set(variants)  # each variant cell was scored on dev too
    seeds = ablations.by_seed()
    assert seeds and all(len(by_rows) > 1 for by_rows in seeds.values())
    assert set(ablations.not_run("gepa")) | set(ablations.of("gepa")) == {"light", "medium", "heavy"}


def test_each_record_knows_where_its_stage_writes_it():
    assert Evaluation.path(COMMITTED, "ft_all", "all") == COMMITTED.expert_result("all")
    assert Evaluation.path(COMMITTED, "cell", "variant/shn/search") == COMMITTED.ablation_result("variant/shn/search")
    assert (Baselines.path(COMMITTED), MergeReport.path(COMMITTED)) == (COMMITTED.baselines, COMMITTED.merging_record)
    with pytest.raises(ValueError, match="lives in its stage's report"):
        Evaluation.path(COMMITTED, "merge", "ties")


def test_a_malformed_record_names_the_file_and_the_field(tmp_path):
    bad = tmp_path / "search.json"
    record = json.loads(COMMITTED.expert_result("search").read_text())
    record["averages"]["all"] = "high"
    bad.write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"search\.json: Evaluation field 'averages\.all'"):
        load_evaluation(bad)
    bad.write_text(json.dumps({"expert": "nlu"}))
    with pytest.raises(DataError, match=r"search\.json: TrainingRecord field '\w+': Field required"):
        TrainingRecord.load(bad)
