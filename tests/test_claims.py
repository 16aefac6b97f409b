"""The claims table names what the records say, whatever order the configuration lists things in."""

from conftest import evaluation

from stm.core.records import Candidate, MainLine, MergeReport, MethodResult, RunInfo
from stm.figures.claims import main_line_claims
from stm.paths import Layout


def _main_line(tmp_path, experts, weights) -> MainLine:
    """A merge report written and read back as the merge stage and the report do."""
    chosen = Candidate(weights=weights, densities=[0.5] * len(weights), score=0.6)
    test = evaluation({"t": {"q": 0.5}}, merge={"method": "ties", **chosen.dump(), "experts": experts})
    report = MergeReport(experts=experts, search={}, dev_tasks={}, methods={"ties": MethodResult(
        history=[chosen], chosen=chosen, dev_score=0.6, test=test, mergekit_config={}, seconds_per_candidate=None,
        candidates_reused=0)})
    layout = Layout("embedded", "b", tmp_path)
    report.save(layout.merging_record)
    return MainLine.load(layout)


def test_reordered_experts_the_best_merge_names_the_expert_it_drops(tmp_path):
    """merging.experts in another order than the splits': the zero weight belongs to NLU, listed first."""
    main = _main_line(tmp_path, ["nlu", "search", "med_real", "med_synth"], [0.0, 0.4, 0.3, 0.3])
    row = next(r for r in main_line_claims(main) if r["claim"] == "the best merge drops an expert")
    assert row["verdict"] == "holds" and "drops ['NLU']" in row["detail"]
    assert row["compared"] == "STM ties (best on dev)"


def test_a_subset_of_experts_is_named_by_its_own_list(tmp_path):
    main = _main_line(tmp_path, ["search", "med_synth"], [0.5, 0.0])
    row = next(r for r in main_line_claims(main) if r["claim"] == "the best merge drops an expert")
    assert "drops ['Med-Synth']" in row["detail"]


def test_models_are_found_by_role_and_name_not_by_label():
    """An expert named like a merge's label stays an expert; FT-all is its own role."""
    rec = evaluation({"t": {"q": 0.5}})
    main = MainLine(RunInfo("embedded", "b"), experts={"STM ties": rec, "all": rec, "nlu": rec})
    assert [(m.role, m.name) for m in main.models()] == [("expert", "STM ties"), ("ft_all", "all"), ("expert", "nlu")]
    assert main.of("merge") == [] and main.one("ft_all").label == "FT-all"
