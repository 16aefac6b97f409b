"""`python -m stm compare`: a fresh run's scores against the committed run's bootstrap intervals."""

import numpy as np

from stm.figures.compare import compare, render


def _record(scores_by_task: dict[str, list[float]]) -> dict:
    per_query = {t: {f"q{i}": s for i, s in enumerate(v)} for t, v in scores_by_task.items()}
    avg = float(np.mean([np.mean(v) for v in scores_by_task.values()]))
    return {"averages": {"all": round(avg, 5)}, "per_query_ndcg_at_10": per_query}


def test_a_fresh_run_is_judged_against_the_committed_interval():
    rng = np.random.default_rng(0)
    base = {"a": list(rng.uniform(0, 1, 60)), "b": list(rng.uniform(0, 1, 60))}
    committed = {"expert": _record(base), "merge": _record(base), "gone": _record(base)}
    nudged = {t: [min(1.0, s + 0.01) for s in v] for t, v in base.items()}   # inside a ~0.07-wide interval
    far = {t: [min(1.0, s + 0.3) for s in v] for t, v in base.items()}
    fresh = {"expert": _record(base), "merge": _record(nudged), "other": _record(far)}
    rows = {r["model"]: r for r in compare(committed, fresh)}
    assert rows["expert"]["verdict"] == "identical"
    assert rows["merge"]["verdict"] == "inside" and 0 < rows["merge"]["delta"] <= 0.011
    assert rows["gone"]["verdict"] == "missing"
    fresh["merge"] = _record(far)
    rows = {r["model"]: r for r in compare(committed, fresh)}
    assert rows["merge"]["verdict"] == "outside" and rows["merge"]["fresh"] > rows["merge"]["ci95"][1]
    assert "1 of 3 models inside" in render(list(rows.values()))


def test_a_model_without_per_query_scores_is_identical_or_unjudged():
    committed = {"BM25": {"averages": {"all": 0.7}}}
    assert compare(committed, {"BM25": {"averages": {"all": 0.7}}})[0]["verdict"] == "identical"
    assert compare(committed, {"BM25": {"averages": {"all": 0.6}}})[0]["verdict"].startswith("no interval")
