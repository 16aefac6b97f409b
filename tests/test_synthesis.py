import json

import pytest

from stm.config import GenerationConfig
from stm.core.sampling import batch_order
from stm.core.generation_cache import generate_cached, load_cache
from stm.core.filters import check, clean
from stm.core.generators import GeneratorError, build_generator
from stm.rehearsal.fake_openai import FakeOpenAI
from stm.synthesis.shn import PAPER_TEMPLATE, TemplateError, render
from conftest import group_config

MARKER_KEY = "sk-test-MARKER-5f1e2d"


@pytest.fixture()
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture()
def server(fake):
    return fake.url


def openai_cfg(url, **kw):
    return GenerationConfig(**{"kind": "openai", "model": "fake-70b", "base_url": url, "api_key_env": "STM_TEST_KEY",
                               "max_retries": 0, "timeout_s": 5, **kw})


def test_openai_generator_uses_key_but_never_writes_it(fake, server, tmp_path, monkeypatch):
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    gen = build_generator(openai_cfg(server))
    out = generate_cached(gen, ["write about insulin", "write about asthma"], tmp_path / "cache.jsonl", 2)
    assert all(o and "cardiology" in o for o in out)
    assert fake.behaviour.seen_auth == [f"Bearer {MARKER_KEY}"] * 2
    for f in tmp_path.rglob("*"):
        assert MARKER_KEY not in f.read_text()
    assert MARKER_KEY not in json.dumps(gen.settings())


def test_cache_resumes_and_regenerates_nothing(fake, server, tmp_path, monkeypatch):
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    gen = build_generator(openai_cfg(server))
    prompts = [f"prompt {i}" for i in range(5)]
    generate_cached(gen, prompts[:3], tmp_path / "c.jsonl", 2)
    with (tmp_path / "c.jsonl").open("a") as f:
        f.write('{"key": "torn')  # an interrupted write
    before = fake.behaviour.calls
    out = generate_cached(gen, prompts, tmp_path / "c.jsonl", 2)
    assert fake.behaviour.calls - before == 2 and len(out) == 5
    before = fake.behaviour.calls
    generate_cached(gen, prompts, tmp_path / "c.jsonl", 2)
    assert fake.behaviour.calls == before
    assert len(load_cache(tmp_path / "c.jsonl")) == 5


def test_server_errors_become_counted_none_and_keep_cache(fake, server, tmp_path, monkeypatch):
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    gen = build_generator(openai_cfg(server))
    generate_cached(gen, ["a"], tmp_path / "c.jsonl")
    fake.behaviour.mode = "error"
    out = generate_cached(gen, ["a", "b"], tmp_path / "c.jsonl")
    assert out[0] is not None and out[1] is None  # cached row kept, failed row is None (counted upstream)


def test_requests_run_concurrently_and_answers_keep_prompt_order(fake, monkeypatch):
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    fake.behaviour.latency_s = 0.2
    prompts = [f'Write a passage that does not answer the query. positive document: "topic number {i}"' for i in range(8)]
    out = build_generator(openai_cfg(fake.url, concurrency=8)).generate(prompts)
    # all eight in flight at once, as the server saw them (a wall-clock bound flaked on a loaded 2-core machine; the
    # speed-up itself is measured by benchmarks/generator_concurrency.py)
    assert fake.behaviour.max_in_flight == 8
    assert [o.split(" only in passing")[0].split()[-3:] for o in out] == [["topic", "number", str(i)] for i in range(8)]


def test_rate_limits_are_retried_with_back_off(fake, server, tmp_path, monkeypatch):
    """429 answers (Retry-After) are retried by the client; the rows succeed and nothing is counted as failed."""
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    fake.behaviour.rate_limit_first = 3
    gen = build_generator(openai_cfg(server, max_retries=3, concurrency=2))
    out = generate_cached(gen, ["a", "b"], tmp_path / "c.jsonl", 2)
    assert all(out) and fake.behaviour.calls == 5
    fake.behaviour.rate_limit_first = 10**6  # a limit that never lifts: the row fails after its retries
    assert generate_cached(gen, ["c"], tmp_path / "c.jsonl") == [None] and fake.behaviour.calls == 5 + 4


def test_unreachable_endpoint_fails_fast_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    gen = build_generator(openai_cfg("http://127.0.0.1:9/v1"))
    with pytest.raises(GeneratorError, match="endpoint unreachable"):
        generate_cached(gen, ["a"], tmp_path / "c.jsonl")
    assert not load_cache(tmp_path / "c.jsonl")


def test_missing_key_for_hosted_api_is_named(monkeypatch):
    monkeypatch.delenv("STM_TEST_KEY", raising=False)
    with pytest.raises(GeneratorError, match="STM_TEST_KEY is not set"):
        build_generator(GenerationConfig(kind="openai", model="gpt", api_key_env="STM_TEST_KEY"))


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("Sure! Here is the hard negative document.", "meta_commentary"),
    ("too short", "too_short"),
    ("heart " * 300, "too_long"),
    ("Insulin resistance in adipose tissue drives type 2 diabetes in obese mice fed a high fat diet", "copy"),
    ("Asthma control improved with inhaled steroids in children across twelve clinics during winter", None),
])
def test_filters_name_their_reason(text, reason):
    positive = "Insulin resistance in adipose tissue drives type 2 diabetes in obese mice fed a high fat diet."
    assert check(clean(text), min_words=5, max_words=100, not_copies_of=(positive, "insulin")) == reason


def test_template_errors_name_the_field():
    row = {"query": "q", "instruction": "i", "positive": "p", "negative": "n"}
    assert '"q"' in render(PAPER_TEMPLATE, row)
    with pytest.raises(TemplateError, match=r"missing field\(s\) \['positive'\]"):
        render(PAPER_TEMPLATE.replace("{positive}", ""), row)
    with pytest.raises(TemplateError, match="unknown field"):
        render(PAPER_TEMPLATE + "{answer}", row)


def test_a_fewshot_template_shows_real_triples_and_renders_the_row():
    from stm.synthesis.shn import fewshot_template

    shots = [{"instruction": "Find {abstracts}", "query": "statin dose", "positive": "word " * 100,
              "negative": "Cholesterol crystals in rabbits " * 20}]
    prompt = render(fewshot_template(shots, words=10), {"query": "aspirin", "instruction": "i", "positive": "p",
                                                         "negative": "unused"})
    first, target = prompt.split("\n\n")
    assert "Find {abstracts}" in first and first.endswith("Hard negative: Cholesterol crystals in rabbits "
                                                          "Cholesterol crystals in rabbits Cholesterol crystals")
    assert target == "Task: i\nQuery: aspirin\nRelevant abstract: p\nHard negative:"


def test_shn_stage_counts_rejections_and_falls_back(fake, server, processed, tmp_path, monkeypatch):
    from stm.synthesis import shn
    from stm.data.schema import read_triples

    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    cfg = group_config("synthesis", generator=openai_cfg(server), splits=["nlu", "search"], rows_per_split=6, min_words=5)
    training = group_config("training", batch_size=4, max_steps=3, seed=5)  # sees 12 of the 24 rows
    fake.behaviour.mode = "garbage"
    report = shn.run(cfg, processed, tmp_path / "synthesis.json", training=training)
    nlu = report["splits"]["nlu"]
    assert nlu["counts"] == {"meta_commentary": 6, "not_attempted": 18} and nlu["rejection_rate"] == 1.0
    rows = read_triples(processed / "synthesis" / "shn" / "nlu.jsonl")
    original = read_triples(processed / "splits" / "nlu.jsonl")
    assert [r["negative"] for r in rows] == [r["negative"] for r in original]  # fell back to mined negatives
    fake.behaviour.mode = "ok"
    cfg2 = cfg.model_copy(update={"generator": openai_cfg(server, temperature=0.5)})
    report = shn.run(cfg2, processed, tmp_path / "synthesis.json", training=training)
    kept = report["splits"]["search"]["kept"]
    assert report["splits"]["search"]["attempted"] == 6 and kept >= 5
    rows = read_triples(processed / "synthesis" / "shn" / "search.jsonl")
    # the negatives were written for the first 6 rows the Search expert's training sees, in that order
    seen = [i for batch in batch_order(24, 4, 3, 5) for i in batch]
    rewritten = [i for i, r in enumerate(rows) if r["negative_source"].startswith("synthetic:openai")]
    assert len(rewritten) == kept and set(rewritten) <= set(seen[:6]) and not set(rewritten) <= set(range(6))
    assert all(rows[i]["mined_negative"] for i in rewritten)
    # rows: first takes the split's first rows instead, and needs no training config
    report = shn.run(cfg2.model_copy(update={"rows": "first"}), processed, tmp_path / "synthesis.json")
    rows = read_triples(processed / "synthesis" / "shn" / "search.jsonl")
    assert {i for i, r in enumerate(rows) if r.get("mined_negative")} <= set(range(6))
    with pytest.raises(ValueError, match="needs the training config"):
        shn.run(cfg2, processed, tmp_path / "synthesis.json")
    assert MARKER_KEY not in (tmp_path / "synthesis.json").read_text()


@pytest.mark.parametrize("text,reason", [
    ("[URL] [TEXT] | Title | Subject | Author | Body of the document here", "markup"),
    ("AUDIENCELESS COUNSELING FOR MEDICAL ADULTS AND ANALYTICS WITH THE JOINED TECHNOLOGY", "not_prose"),
    ("Computer vision and audio processing analyse video content with convolutional networks", "off_topic"),
    ("Insulin signalling in adipose tissue of lean rats was unaffected by a low fat diet", None),
])
def test_hard_negative_filters_for_small_generators(text, reason):
    topic = "insulin resistance adipose tissue obese mice high fat diet"
    assert check(text, min_words=5, max_words=100, on_topic_with=topic) == reason


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_a_shared_few_shot_prefix_is_computed_once_with_the_same_generations(tmp_path, arch, monkeypatch):
    """Prompts that start alike (a few-shot template) run the shared tokens once for the batch; greedy outputs are
    the ones the plain left-padded batch gives."""
    from stm.config import GenerationConfig
    from stm.core import generators as G
    from tiny import TEXTS, make_model

    model = make_model(tmp_path / arch, arch)
    gen = build_generator(GenerationConfig(kind="local", model=str(model), style="completion", temperature=0.0,
                                           max_new_tokens=6, batch_size=8))
    shared = " ".join(TEXTS * 2) + "\n\n"
    prompts = [shared + t for t in TEXTS] + [shared + TEXTS[0] + " " + TEXTS[1]]
    batch = gen._inputs(prompts)
    if arch == "gemma3":  # sliding-window layers: padding counts inside the window, so no prefix cache
        assert "cache" not in batch
    else:
        assert "cache" in batch and batch["cache"].get_seq_length() >= G.MIN_SHARED_TOKENS
    cached = gen.generate(prompts)
    monkeypatch.setattr(G, "MIN_SHARED_TOKENS", 10**9)
    assert "cache" not in gen._inputs(prompts)
    assert cached == gen.generate(prompts) and any(cached)
