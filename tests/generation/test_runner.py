"""The asyncio runner against the loopback OpenAI-compatible server, through the real client."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from tests.generation.conftest import API_KEY
from workers.engine import topk_format
from workers.engine.teachers.openai_runner import (
    Decoding,
    ItemResult,
    RunnerConfig,
    RunOutcome,
    WorkItem,
    run_openai,
)


def _items(n: int, samples: int = 1) -> list[WorkItem]:
    return [
        WorkItem(i, s, [{"role": "user", "content": f"q{i}"}])
        for i in range(n)
        for s in range(samples)
    ]


def _config(server, **kwargs) -> RunnerConfig:
    base = {
        "base_url": server.base_url,
        "model": "teacher-model",
        "api_key": API_KEY,
        "concurrency": 4,
        "timeout": 2.0,
        "max_attempts": 3,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "flush_interval": 0.2,
        "poll_interval": 0.2,
    }
    base.update(kwargs)
    return RunnerConfig(**base)


def _run(items, config, control=None) -> tuple[object, list[ItemResult], list[int]]:
    results: list[ItemResult] = []
    batches: list[int] = []

    async def sink(batch: list[ItemResult]) -> None:
        batches.append(len(batch))
        results.extend(batch)

    summary = asyncio.run(run_openai(items, config, sink=sink, control=control))
    return summary, results, batches


def test_every_item_gets_a_result_with_usage_cost_and_topk(fake_openai) -> None:
    config = _config(
        fake_openai,
        price_input_per_m=Decimal("2"),
        price_output_per_m=Decimal("10"),
        decoding=Decoding(
            system_prompt="Be brief.", temperature=0.0, max_tokens=50, top_logprobs=5, seed=7
        ),
    )
    summary, results, _ = _run(_items(10, samples=2), config)
    assert summary.outcome == RunOutcome.COMPLETED and summary.ok == 20
    assert sorted((r.prompt_id, r.sample_index) for r in results) == [
        (i, s) for i in range(10) for s in range(2)
    ]
    r = next(r for r in results if (r.prompt_id, r.sample_index) == (3, 1))
    assert r.text == "Answer to: q3 seed 8"  # seed + sample index
    assert r.finish_reason == "stop" and r.completion_tokens == 5 and r.prompt_tokens > 0
    assert r.cost_usd == (
        Decimal(r.prompt_tokens) * 2 + Decimal(r.completion_tokens) * 10
    ) / Decimal(1_000_000)
    record = topk_format.decode(r.topk)
    assert record.token_strings() == ["Answer", " to:", " q3", " seed", " 8"]
    assert record.k == 5 and record.topk_logprobs.dtype.name == "float16"
    assert r.mean_logprob == pytest.approx(sum(-0.05 - 0.01 * i for i in range(5)) / 5, abs=1e-6)
    body = fake_openai.bodies[0]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["logprobs"] is True and body["top_logprobs"] == 5 and body["max_tokens"] == 50


def test_without_top_logprobs_nothing_is_requested_or_stored(fake_openai) -> None:
    _summary, results, _ = _run(_items(2), _config(fake_openai))
    assert all(r.topk is None and r.mean_logprob is None for r in results)
    assert "logprobs" not in fake_openai.bodies[0]


def test_429_with_retry_after_is_waited_for_then_succeeds(fake_openai) -> None:
    fake_openai.retry_after = "1"
    fake_openai.push("429")
    started = time.monotonic()
    summary, results, _ = _run(_items(1), _config(fake_openai, concurrency=1))
    assert time.monotonic() - started >= 1.0
    assert summary.ok == 1 and results[0].attempts == 2 and summary.retries == 1


def test_429_with_an_http_date_is_honoured(fake_openai) -> None:
    fake_openai.retry_after = "2"
    fake_openai.push("429-date")
    started = time.monotonic()
    summary, _results, _ = _run(_items(1), _config(fake_openai, concurrency=1))
    assert summary.ok == 1 and time.monotonic() - started >= 0.9  # HTTP dates have 1 s resolution


def test_server_errors_resets_and_malformed_json_are_retried_and_the_client_does_not_retry_on_its_own(
    fake_openai,
) -> None:
    fake_openai.push("500", "reset", "malformed")
    summary, results, _ = _run(_items(1), _config(fake_openai, concurrency=1, max_attempts=4))
    assert summary.ok == 1 and results[0].attempts == 4
    assert fake_openai.requests == 4  # exactly our attempts: max_retries=0 on the client


def test_a_timeout_is_retried_and_after_the_last_attempt_recorded_as_failed(fake_openai) -> None:
    fake_openai.slow_seconds = 1.5
    fake_openai.push("slow", "slow")
    summary, results, _ = _run(
        _items(1), _config(fake_openai, concurrency=1, timeout=0.5, max_attempts=2)
    )
    assert summary.failed == 1 and summary.outcome == RunOutcome.COMPLETED
    assert (
        not results[0].ok
        and "Timed out" in results[0].error
        and "after 2 attempts" in results[0].error
    )


def test_400_is_recorded_without_retry_and_the_run_goes_on(fake_openai) -> None:
    fake_openai.push("400")
    summary, results, _ = _run(_items(3), _config(fake_openai, concurrency=1))
    failed = [r for r in results if not r.ok]
    assert summary.outcome == RunOutcome.COMPLETED and len(failed) == 1 and summary.ok == 2
    assert (
        failed[0].attempts == 1
        and "HTTP 400" in failed[0].error
        and "context_length_exceeded" in failed[0].error  # the code, never the foreign body
    )
    assert fake_openai.requests == 3


def test_a_wrong_key_stops_the_run_at_once_without_retries(fake_openai) -> None:
    summary, results, _ = _run(_items(20), _config(fake_openai, api_key="sk-wrong", concurrency=2))
    assert summary.outcome == RunOutcome.ABORTED and "HTTP 401" in summary.fatal_error
    assert fake_openai.requests <= 3  # no retries; the few already in flight at most
    assert all(not r.ok for r in results) and len(results) <= 3


def test_an_unknown_model_stops_the_run(fake_openai) -> None:
    summary, _results, _ = _run(
        _items(5), _config(fake_openai, model="no-such-model", concurrency=1)
    )
    assert summary.outcome == RunOutcome.ABORTED and "model_not_found" in summary.fatal_error


def test_concurrency_is_bounded(fake_openai) -> None:
    fake_openai.latency = 0.05
    summary, _results, _ = _run(_items(40), _config(fake_openai, concurrency=5))
    assert summary.ok == 40
    assert 2 <= fake_openai.max_in_flight <= 5


def test_requests_per_minute_are_spread_out(fake_openai) -> None:
    # 120/min = 2/s with a 2-second burst: 8 requests need about 2 s.
    started = time.monotonic()
    summary, _results, _ = _run(
        _items(8), _config(fake_openai, concurrency=8, requests_per_minute=120)
    )
    assert summary.ok == 8 and time.monotonic() - started >= 1.6


def test_results_are_handed_over_in_batches(fake_openai) -> None:
    _summary, results, batches = _run(
        _items(30), _config(fake_openai, flush_every=10, flush_interval=5)
    )
    assert sum(batches) == 30 == len(results) and len(batches) >= 3 and max(batches) <= 14


def test_stop_from_control_ends_the_run_within_seconds_and_keeps_what_is_done(fake_openai) -> None:
    fake_openai.latency = 0.2
    polls = {"n": 0}

    async def control() -> bool:
        polls["n"] += 1
        return polls["n"] < 3

    started = time.monotonic()
    summary, results, _ = _run(_items(500), _config(fake_openai, concurrency=4), control=control)
    assert summary.outcome == RunOutcome.STOPPED
    assert time.monotonic() - started < 3
    assert 0 < len(results) < 500 and all(
        r.ok for r in results
    )  # in-flight items are left missing, not failed
