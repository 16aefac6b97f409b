import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, random
from stm.data.pubmed import Article
from stm.data.build import _keyword_tasks, _mesh_task, _claims_task
rng = random.Random(0)
words = ["vaccine hesitancy", "anxiety", "mental health", "telemedicine", "obesity", "sleep", "long covid", "children",
         "nurses", "lockdown", "depression", "diabetes"]
arts = []
for i in range(80):
    kws = rng.sample(words, 3) + (["COVID-19"] if i % 2 else [])
    text = " ".join(rng.sample(words, 4)) + " were studied in a cohort. " * 8
    arts.append(Article(pmid=str(1000 + i), title=f"t{i}", language="eng", year="2021",
                        sections=[("BACKGROUND", text), ("RESULTS", "Rates fell by half in the cohort."),
                                  ("CONCLUSIONS", "Vaccine hesitancy was linked to anxiety in the cohort studied.")],
                        keywords=kws, mesh_major=rng.sample(words, 2), mesh_minor=rng.sample(words, 2)))
kw, cov = _keyword_tasks(arts, 30, random.Random(1), 50)
out = {"kw": kw[1:], "cov": cov[1:], "mesh": _mesh_task(arts, 10, random.Random(2), 50)[1:],
       "claims": _claims_task(arts, 10, random.Random(3), 50)[1:]}
print(json.dumps(out, sort_keys=False))
"""


def test_task_construction_does_not_depend_on_the_hash_seed():
    outs = []
    for seed in ("1", "2"):  # two hash seeds: a set's iteration order that leaks into a task differs between them
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
    data = json.loads(outs[0])
    assert data["cov"][0] and data["mesh"][0] and data["kw"][0]


def test_mining_several_splits_at_once_equals_mining_each_alone():
    """The data stage indexes its corpus once for every split: each split's negatives are the ones it would get
    mined alone (same top-k per query, same seeded sampling)."""
    from stm.data.mining import mine_negatives, mine_splits

    topics = ["heart failure statin", "liver fibrosis mouse", "covid vaccine trial", "asthma inhaler children",
              "kidney injury sepsis", "diabetes weight loss", "malaria bed nets", "stroke blood pressure"]
    corpus = [f"{t} study {i} of {t.split()[0]} patients with {topics[(i + 1) % 8]}" for i in range(40)
              for t in [topics[i % 8]]]
    ids = [f"pmid:{i}" for i in range(40)]
    splits = {"a": ([f"{topics[i % 8]} outcome" for i in range(10)], list(range(10))),
              "b": ([topics[(i + 3) % 8] for i in range(7)], list(range(20, 27)))}
    together = mine_splits(splits, corpus, ids, "bm25", 5, seed=13)
    assert together == {name: mine_negatives(q, pos, corpus, ids, "bm25", 5, seed=13) for name, (q, pos) in splits.items()}
    assert all(j != pos for name, (_, p) in splits.items() for j, pos in zip(together[name], p))


class _Writer:
    """A question writer that answers every other abstract with a generic question, as SmolLM2 often does."""

    id = "fake:writer"

    def settings(self) -> dict:
        return {"kind": "fake"}

    def generate(self, prompts, seed_offset=0):
        out = []
        for p in prompts:
            abstract = p.rsplit("Abstract: ", 1)[1]
            topic = abstract.split()[0]
            out.append(f"Does {topic} therapy reduce mortality?" if "even" in abstract
                       else "How can I improve my writing style?")
        return out


def test_med_synth_keeps_only_questions_that_share_a_term_with_the_abstract(tmp_path, monkeypatch):
    """`data.med_synth_min_shared_terms`: a generic question sharing no content word with the abstract words the
    writer read is rejected as off_topic, and generation goes on until the split is full; 0 turns the check off."""
    import random

    from stm import config
    from stm.data import build
    from stm.data.pubmed import Article

    monkeypatch.setattr(build, "build_generator", lambda cfg: _Writer())
    arts = [Article(pmid=str(i), title=f"t{i}", language="eng", year="2021",
                    sections=[("", f"{['Statin', 'Aspirin', 'Insulin'][i % 3]} {'even' if i % 2 == 0 else 'odd'} "
                                   f"trial {i} enrolled adults with heart failure and followed them for two years.")])
            for i in range(60)]
    cfg = config.load("data", profile="embedded").model_copy(update={"med_synth_min_shared_terms": 1})
    rows, report = build._med_synth(arts, 10, cfg, random.Random(0), tmp_path / "a")
    assert len(rows) == 10 and all("writing style" not in r["query"] for r in rows)
    assert report["counts"]["off_topic"] >= 9 and report["generated"] >= 20
    rows, report = build._med_synth(arts, 10, cfg.model_copy(update={"med_synth_min_shared_terms": 0}),
                                    random.Random(0), tmp_path / "b")
    assert len(rows) == 10 and "off_topic" not in report["counts"]
    assert any("writing style" in r["query"] for r in rows)
