"""Requests per second of the OpenAI-compatible generator at 1 vs N requests in flight, against the fake server.

Usage: python benchmarks/generator_concurrency.py [--requests 96] [--latency 0.2] [--in-flight 1 8 32]

The fake endpoint (stm.rehearsal.fake_openai) answers each request after --latency seconds, standing in for a
served LLM whose answer takes that long. The paper's SHN step sends one request per training row (about 1.43M
rows, Table 2), so the record also gives the days that step would take at each setting, scaled to a 10 s answer.
"""

from __future__ import annotations

import argparse
import time

from common import save
from stm.config import GenerationConfig
from stm.core.generators import build_generator
from stm.rehearsal.fake_openai import Behaviour, FakeOpenAI

PAPER_ROWS = 431_000 + 306_000 + 438_000 + 251_000  # Table 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args()
    rows = []
    with FakeOpenAI(behaviour=Behaviour(latency_s=args.latency)) as server:
        for n in args.in_flight:
            cfg = GenerationConfig(kind="openai", model="fake", base_url=server.url, concurrency=n, max_retries=0)
            gen = build_generator(cfg)
            prompts = [f"prompt {n}-{i}" for i in range(args.requests)]
            server.behaviour.max_in_flight = 0
            t0 = time.perf_counter()
            out = gen.generate(prompts)
            elapsed = time.perf_counter() - t0
            assert all(out), "the fake server failed a request"
            rps = args.requests / elapsed
            rows.append({"in_flight": n, "requests_per_s": round(rps, 2), "seconds": round(elapsed, 2),
                         "max_in_flight_seen": server.behaviour.max_in_flight,
                         "efficiency_vs_ideal": round(rps * args.latency / n, 3),
                         "paper_shn_days_at_10s_per_answer": round(PAPER_ROWS * 10 / (rps * args.latency) / 86400, 1)})
            print(rows[-1])
    base = rows[0]["requests_per_s"]
    for r in rows:
        r["speed_up_vs_first"] = round(r["requests_per_s"] / base, 1)
    save("generator_concurrency", {"requests": args.requests, "latency_s": args.latency, "rows": rows})


if __name__ == "__main__":
    main()
