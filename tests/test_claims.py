"""The claims table names what the records say, whatever order the configuration lists things in."""

import json

from stm.figures.claims import main_line_claims
from stm.paths import Layout


def _merging(tmp_path, experts, weights):
    test = {"scores": {}, "averages": {"all": 0.5}}
    report = {"experts": experts, "methods": {"ties": {"chosen": {"weights": weights, "densities": [0.5] * len(weights),
                                                                  "score": 0.6}, "test": test}}}
    layout = Layout("embedded", "b", tmp_path)
    layout.merging_record.parent.mkdir(parents=True)
    layout.merging_record.write_text(json.dumps(report))
    return layout


def test_reordered_experts_the_best_merge_names_the_expert_it_drops(tmp_path):
    """merging.experts in another order than the splits': the zero weight belongs to NLU, listed first."""
    results = _merging(tmp_path, ["nlu", "search", "med_real", "med_synth"], [0.0, 0.4, 0.3, 0.3])
    row = next(r for r in main_line_claims(results) if r["claim"] == "the best merge drops an expert")
    assert row["verdict"] == "holds" and "drops ['NLU']" in row["detail"]


def test_a_subset_of_experts_is_named_by_its_own_list(tmp_path):
    results = _merging(tmp_path, ["search", "med_synth"], [0.5, 0.0])
    row = next(r for r in main_line_claims(results) if r["claim"] == "the best merge drops an expert")
    assert "drops ['Med-Synth']" in row["detail"]
