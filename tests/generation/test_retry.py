from __future__ import annotations

import email.utils
import random
import time

import httpx2
import openai
import pytest

from workers.engine.teachers.retry import backoff_delay, classify, parse_retry_after, retry_delay


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(
        status, headers=headers or {}, request=request, json={"error": {"message": "nope"}}
    )
    cls = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        404: openai.NotFoundError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls("nope", response=response, body={"error": {"message": "nope"}})


def test_retry_after_in_seconds_and_milliseconds_is_read() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_retry_after_as_http_date_is_read_relative_to_now() -> None:
    now = time.time()
    value = email.utils.formatdate(now + 10, usegmt=True)
    assert 8.5 <= parse_retry_after({"retry-after": value}, now=now) <= 10.5


def test_retry_after_is_capped() -> None:
    assert parse_retry_after({"retry-after": "99999"}) == 300.0


def test_backoff_has_full_jitter_under_an_exponential_cap() -> None:
    rng = random.Random(0)
    delays = [backoff_delay(4, base=0.5, cap=30, rng=rng) for _ in range(500)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert min(delays) < 0.5 and max(delays) > 3.0  # spread over the whole window
    assert all(backoff_delay(20, base=0.5, cap=30, rng=rng) <= 30 for _ in range(100))


def test_a_server_asked_delay_is_waited_at_least() -> None:
    info = classify(_status_error(429, {"retry-after": "2"}))
    assert info.retryable and info.retry_after == 2.0
    assert all(retry_delay(info, 1, base=0.5, cap=30) >= 2.0 for _ in range(50))


@pytest.mark.parametrize(
    ("status", "retryable", "fatal"),
    [
        (400, False, False),
        (401, False, True),
        (404, False, True),
        (429, True, False),
        (500, True, False),
        (503, True, False),
    ],
)
def test_status_codes_are_classified(status: int, retryable: bool, fatal: bool) -> None:
    info = classify(_status_error(status))
    assert (info.retryable, info.fatal_for_job, info.status) == (retryable, fatal, status)
    assert f"HTTP {status}" in info.message


def test_timeouts_and_connection_errors_are_retryable() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    assert classify(openai.APITimeoutError(request)).retryable
    assert classify(openai.APIConnectionError(request=request)).retryable
