"""A fake OpenAI-compatible chat endpoint on 127.0.0.1: the rehearsal's GPT-4.1 and Llama-3.3-70B.

It answers ``POST /v1/chat/completions`` with a deterministic text built from the prompt, so a run against it
is reproducible, and it can misbehave on purpose (server errors, rate limits, latency) to exercise the
generator's retries, back-off and concurrency. Used by the tests, the rehearsal DAG and
``benchmarks/generator_concurrency.py``.

    python -m stm rehearsal serve --port 18765      # serve until interrupted (the rehearsal's endpoint)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FILLER = ("an unrelated registry of adults followed for ten years reports cardiology outcomes and mentions "
          "{tail} only in passing, with no data on the question asked").split()


@dataclass
class Behaviour:
    """What the server does; change the fields while it runs (tests do)."""

    mode: str = "ok"                 # ok | error (HTTP 500) | garbage (meta-commentary instead of a document)
    latency_s: float = 0.0           # added to every answer, as a busy endpoint would
    rate_limit_first: int = 0        # answer 429 (Retry-After: 0) to this many requests first
    calls: int = 0
    seen_auth: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def answer(prompt: str) -> str:
    """A deterministic reply: for an SHN prompt, a plausible off-topic passage naming the positive's last words."""
    quoted = prompt.split('positive document: "')[-1].split('"')[0].split() if "positive document" in prompt else []
    tail = " ".join(quoted[-4:]) or hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return " ".join(FILLER).format(tail=tail).capitalize() + "."


def _handler(b: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with b.lock:
                b.calls += 1
                b.seen_auth.append(self.headers.get("Authorization", ""))
                limited = b.calls <= b.rate_limit_first
                b.in_flight += 1
                b.max_in_flight = max(b.max_in_flight, b.in_flight)
            try:
                if b.latency_s:
                    time.sleep(b.latency_s)
                if limited:
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                      {"Retry-After": "0", "retry-after-ms": "10"})
                if b.mode == "error":
                    return self._send(500, {"error": {"message": "boom"}})
                text = answer(body["messages"][-1]["content"]) if b.mode == "ok" else \
                    "Sure! Here is the hard negative document you asked for."
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}]})
            finally:
                with b.lock:
                    b.in_flight -= 1

    return Handler


class FakeOpenAI:
    """``with FakeOpenAI() as server:`` serves on a free port; ``server.url`` is the ``base_url``."""

    def __init__(self, port: int = 0, behaviour: Behaviour | None = None):
        self.behaviour = behaviour or Behaviour()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self.behaviour))
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 128
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=18765)
    p.add_argument("--latency", type=float, default=0.0)
    args = p.parse_args(argv)
    server = FakeOpenAI(args.port, Behaviour(latency_s=args.latency))
    print(f"fake OpenAI endpoint at {server.url}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
