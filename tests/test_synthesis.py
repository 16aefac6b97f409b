import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stm.config import GenerationConfig, SynthesisConfig
from stm.core.generation_cache import generate_cached, load_cache
from stm.core.filters import check, clean
from stm.core.generators import GeneratorError, build_generator
from stm.synthesis.shn import PAPER_TEMPLATE, TemplateError, render

MARKER_KEY = "sk-test-MARKER-5f1e2d"


class FakeOpenAI(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible chat endpoint on 127.0.0.1; behaviour chosen per test."""

    mode = "ok"
    seen_auth: list[str] = []
    calls = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        if self.mode == "error":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "boom"}}')
            return
        prompt = body["messages"][0]["content"]
        positive = prompt.split('positive document: "')[-1].split('"')[0].split()
        text = {"ok": f"An unrelated registry of adults followed for ten years mentions {' '.join(positive[-4:])} "
                      "only in passing while reporting cardiology outcomes.",
                "garbage": "Sure! Here is the hard negative document you asked for."}[self.mode]
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    FakeOpenAI.mode, FakeOpenAI.seen_auth, FakeOpenAI.calls = "ok", [], 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def openai_cfg(url, **kw):
    return GenerationConfig(kind="openai", model="fake-70b", base_url=url, api_key_env="STM_TEST_KEY",
                            max_retries=0, timeout_s=5, **kw)


def test_openai_generator_uses_key_but_never_writes_it(server, tmp_path, monkeypatch):
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    gen = build_generator(openai_cfg(server))
    out = generate_cached(gen, ["write about insulin", "write about asthma"], tmp_path / "cache.jsonl", 2)
    assert all(o and "cardiology" in o for o in out)
    assert FakeOpenAI.seen_auth == [f"Bearer {MARKER_KEY}"] * 2
    for f in tmp_path.rglob("*"):
        assert MARKER_KEY not in f.read_text()
    assert MARKER_KEY not in json.dumps(gen.settings())


def test_cache_resumes_and_regenerates_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    gen = build_generator(openai_cfg(server))
    prompts = [f"prompt {i}" for i in range(5)]
    generate_cached(gen, prompts[:3], tmp_path / "c.jsonl", 2)
    with (tmp_path / "c.jsonl").open("a") as f:
        f.write('{"key": "torn')  # an interrupted write
    before = FakeOpenAI.calls
    out = generate_cached(gen, prompts, tmp_path / "c.jsonl", 2)
    assert FakeOpenAI.calls - before == 2 and len(out) == 5
    before = FakeOpenAI.calls
    generate_cached(gen, prompts, tmp_path / "c.jsonl", 2)
    assert FakeOpenAI.calls == before
    assert len(load_cache(tmp_path / "c.jsonl")) == 5


def test_server_errors_become_counted_none_and_keep_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    gen = build_generator(openai_cfg(server))
    generate_cached(gen, ["a"], tmp_path / "c.jsonl")
    FakeOpenAI.mode = "error"
    out = generate_cached(gen, ["a", "b"], tmp_path / "c.jsonl")
    assert out[0] is not None and out[1] is None  # cached row kept, failed row is None (counted upstream)


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
    with pytest.raises(TemplateError, match=r"missing field\(s\) \['negative'\]"):
        render(PAPER_TEMPLATE.replace("{negative}", ""), row)
    with pytest.raises(TemplateError, match="unknown field"):
        render(PAPER_TEMPLATE + "{answer}", row)


def test_shn_stage_counts_rejections_and_falls_back(server, processed, tmp_path, monkeypatch):
    from stm.synthesis import shn
    from stm.data.schema import read_triples

    monkeypatch.setenv("STM_TEST_KEY", MARKER_KEY)
    cfg = SynthesisConfig(generator=openai_cfg(server), splits=["nlu", "search"], rows_per_split=6, min_words=5)
    FakeOpenAI.mode = "garbage"
    report = shn.run(cfg, processed, tmp_path / "synthesis.json")
    nlu = report["splits"]["nlu"]
    assert nlu["counts"] == {"meta_commentary": 6, "not_attempted": 18} and nlu["rejection_rate"] == 1.0
    rows = read_triples(processed / "synthesis" / "shn" / "nlu.jsonl")
    original = read_triples(processed / "splits" / "nlu.jsonl")
    assert [r["negative"] for r in rows] == [r["negative"] for r in original]  # fell back to mined negatives
    FakeOpenAI.mode = "ok"
    cfg2 = cfg.model_copy(update={"generator": openai_cfg(server, temperature=0.5)})
    report = shn.run(cfg2, processed, tmp_path / "synthesis.json")
    assert report["splits"]["search"]["kept"] == 6
    rows = read_triples(processed / "synthesis" / "shn" / "search.jsonl")
    assert rows[0]["negative_source"].startswith("synthetic:openai") and rows[0]["mined_negative"]
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
