"""`python -m stm compare`: a fresh run's scores against the committed run's bootstrap intervals."""

import numpy as np
from conftest import evaluation

from stm.core.records import MainLine, RunInfo
from stm.figures.compare import compare, render

RUN = RunInfo("embedded", "b")


def _record(scores_by_task: dict[str, list[float]]):
    return evaluation({t: {f"q{i}": s for i, s in enumerate(v)} for t, v in scores_by_task.items()})


def test_a_fresh_run_is_judged_against_the_committed_interval():
    rng = np.random.default_rng(0)
    base = {"a": list(rng.uniform(0, 1, 60)), "b": list(rng.uniform(0, 1, 60))}
    committed = MainLine(RUN, experts={"search": _record(base), "nlu": _record(base), "med_real": _record(base)})
    nudged = {t: [min(1.0, s + 0.01) for s in v] for t, v in base.items()}   # inside a ~0.07-wide interval
    far = {t: [min(1.0, s + 0.3) for s in v] for t, v in base.items()}
    fresh = {"search": _record(base), "nlu": _record(nudged), "med_synth": _record(far)}
    rows = {r["model"]: r for r in compare(committed, MainLine(RUN, experts=fresh))}
    assert rows["Search"]["verdict"] == "identical"
    assert rows["NLU"]["verdict"] == "inside" and 0 < rows["NLU"]["delta"] <= 0.011
    assert rows["Med-Real"]["verdict"] == "missing"
    fresh["nlu"] = _record(far)
    rows = {r["model"]: r for r in compare(committed, MainLine(RUN, experts=fresh))}
    assert rows["NLU"]["verdict"] == "outside" and rows["NLU"]["fresh"] > rows["NLU"]["ci95"][1]
    assert "1 of 3 models inside" in render(list(rows.values()))


def test_a_model_without_per_query_scores_is_identical_or_unjudged():
    committed = MainLine(RUN, baselines={"bm25": evaluation({})})
    same, other = evaluation({}), evaluation({})
    other.averages = {"all": 0.6}
    assert compare(committed, MainLine(RUN, baselines={"bm25": same}))[0]["verdict"] == "identical"
    assert compare(committed, MainLine(RUN, baselines={"bm25": other}))[0]["verdict"].startswith("no interval")
