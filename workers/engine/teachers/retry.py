"""Retry policy for teacher requests: what is retried, how long to wait, what ends a job.

Retried: 429, 408, 409, every 5xx, timeouts, connection errors and unreadable responses.
Not retried: other 4xx (400 bad request, 401/403 auth, 404 unknown model or route, 422).
401, 403 and 404 are the same for every item of a job, so they stop the whole job.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from dataclasses import dataclass

from workers.engine.outbound import OutboundRefused

RETRYABLE_STATUS = frozenset({408, 409, 429})
JOB_FATAL_STATUS = frozenset({401, 403, 404})
MAX_RETRY_AFTER_SECONDS = 300.0


@dataclass(frozen=True)
class ErrorInfo:
    message: str
    retryable: bool
    status: int | None = None
    retry_after: float | None = None
    fatal_for_job: bool = False


def parse_retry_after(headers: object, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, `Retry-After: <seconds>` or `Retry-After: <HTTP date>`."""
    if headers is None:
        return None
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, min(float(ms) / 1000.0, MAX_RETRY_AFTER_SECONDS))
        except ValueError:
            pass
    value = get("retry-after")
    if not value:
        return None
    value = str(value).strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER_SECONDS))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(value) if _looks_like_date(value) else None
    if parsed is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, min(parsed.timestamp() - now, MAX_RETRY_AFTER_SECONDS))


def _looks_like_date(value: str) -> bool:
    try:
        return email.utils.parsedate_tz(value) is not None
    except (TypeError, ValueError):
        return False


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): uniform(0, min(cap, base·2^(n-1)))."""
    gen = rng or random
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return gen.uniform(0, ceiling)


def retry_delay(
    info: ErrorInfo, attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Wait at least what the server asked for; otherwise back off with jitter."""
    jitter = backoff_delay(attempt, base=base, cap=cap, rng=rng)
    if info.retry_after is not None:
        # A little jitter on top keeps many clients told "retry in 2 s" from arriving together.
        return info.retry_after + (rng or random).uniform(0, min(1.0, base))
    return jitter


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _body_message(body: object) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or json.dumps(err)[:300])
        return str(err)
    if body is None:
        return ""
    return str(body)


def _refusal(exc: BaseException) -> OutboundRefused | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OutboundRefused):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def classify(exc: BaseException) -> ErrorInfo:
    """Describe an exception raised by the `openai` client (or the transport under it)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ErrorInfo("Timed out waiting for the teacher.", retryable=True)
    refused = _refusal(exc)
    if refused is not None:
        # The endpoint is not allowed (workers/engine/outbound.py): no retry can change that.
        return ErrorInfo(_short(str(refused)), retryable=False, fatal_for_job=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {_short(str(cause), 200)}" if cause else ""
        return ErrorInfo(f"Connection error{detail}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        text = _body_message(exc.body) or exc.message
        message = _short(f"HTTP {status}: {text}")
        retry_after = parse_retry_after(exc.response.headers)
        retryable = status in RETRYABLE_STATUS or status >= 500
        return ErrorInfo(
            message,
            retryable=retryable,
            status=status,
            retry_after=retry_after,
            fatal_for_job=status in JOB_FATAL_STATUS,
        )
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | ValueError):
        return ErrorInfo(_short(f"Unreadable response from the teacher: {exc}"), retryable=True)
    if isinstance(exc, openai.APIError):
        return ErrorInfo(_short(f"{type(exc).__name__}: {exc}"), retryable=True)
    if isinstance(exc, OSError | TimeoutError):
        return ErrorInfo(_short(f"{type(exc).__name__}: {exc}"), retryable=True)
    return ErrorInfo(_short(f"{type(exc).__name__}: {exc}"), retryable=False)
