"""Throughput of the API-teacher runner against a loopback OpenAI-compatible server.

5,000 prompts, 200 ms server latency, concurrency 32: the ideal is 32 / 0.2 = 160 requests/s
(target: achieved / ideal >= 0.85). Then the same with 20 % of requests answered 429 with
`Retry-After: 0.2`: every item must still finish. The server runs in its own process so its CPU
is not counted as the client's; the sink is a no-op (the database is not measured here).

    .venv/bin/python bench/teacher_throughput.py [--items 5000] [--concurrency 32] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import os

os.environ.setdefault(
    "DISTILLERY_OUTBOUND_ALLOW", "127.0.0.1/32"
)  # its fake teacher is on loopback
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.engine.teachers.openai_runner import (  # noqa: E402
    Decoding,
    ItemResult,
    RunnerConfig,
    WorkItem,
    run_openai,
)


def start_server(latency: float, rate_429: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.generation.fake_openai",
            "--latency",
            str(latency),
            "--rate-429",
            str(rate_429),
            "--retry-after",
            "0.2",
        ],
        cwd=str(ROOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    port = int(line.split()[1])
    return proc, f"http://127.0.0.1:{port}/v1"


def run(items: int, concurrency: int, base_url: str, top_logprobs: int) -> dict[str, float]:
    work = [
        WorkItem(i, 0, [{"role": "user", "content": f"Question number {i}: what is {i} + {i}?"}])
        for i in range(items)
    ]
    done = {"ok": 0, "failed": 0}

    async def sink(batch: list[ItemResult]) -> None:
        for r in batch:
            done["ok" if r.ok else "failed"] += 1

    config = RunnerConfig(
        base_url=base_url,
        model="teacher-model",
        api_key="bench",
        concurrency=concurrency,
        timeout=30,
        max_attempts=20,
        backoff_base=0.1,
        backoff_cap=2.0,
        decoding=Decoding(max_tokens=64, top_logprobs=top_logprobs),
    )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    summary = asyncio.run(run_openai(work, config, sink=sink))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "wall": wall,
        "cpu": cpu,
        "ok": done["ok"],
        "failed": done["failed"],
        "retries": summary.retries,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--top-logprobs", type=int, default=0)
    args = parser.parse_args()
    ideal = args.concurrency / args.latency
    print(
        f"{args.items} prompts, concurrency {args.concurrency}, server latency {args.latency * 1000:.0f} ms, "
        f"top_logprobs {args.top_logprobs}, {os.cpu_count()} CPUs"
    )
    for label, rate in (("no faults", 0.0), ("20% 429 + Retry-After 0.2s", 0.2)):
        proc, url = start_server(args.latency, rate)
        try:
            r = run(args.items, args.concurrency, url, args.top_logprobs)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=10)
        rps = r["ok"] / r["wall"]
        print(
            f"[{label}] finished {r['ok']:.0f}/{args.items} (failed {r['failed']:.0f}, retries {r['retries']:.0f}) "
            f"in {r['wall']:.1f} s: {rps:.1f} req/s; ideal {ideal:.0f} req/s; ratio {rps / ideal:.2f} "
            f"(target >= 0.85 without faults); client CPU {1000 * r['cpu'] / max(r['ok'], 1):.2f} ms per completion"
        )


if __name__ == "__main__":
    main()
