"""The asyncio runner for OpenAI-compatible chat-completions endpoints. No Django here.

`run_openai(items, config, sink=..., control=...)` sends every work item (one prompt, one sample
index) with bounded concurrency and the teacher's rate limits, retries what is worth retrying, and
hands results to `sink` in batches (every `flush_every` results or `flush_interval` seconds), so
a crash loses at most what was in flight. `control()` is polled every `poll_interval` seconds;
when it returns False the runner stops taking items, abandons what is in flight (those items stay
missing, so a resumed run sends them again), writes what it has and returns.

The `openai` client is built with `max_retries=0`: retries are ours alone, never multiplied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from workers.engine.outbound import OutboundPolicy, async_client
from workers.engine.teachers.ratelimit import RateLimiter
from workers.engine.teachers.retry import ErrorInfo, classify, retry_delay

logger = logging.getLogger(__name__)

_MILLION = Decimal(1_000_000)
_CENT_FRACTION = Decimal("0.00000001")


@dataclass(frozen=True)
class WorkItem:
    prompt_id: int
    sample_index: int
    messages: list[dict[str, Any]]


@dataclass
class ItemResult:
    prompt_id: int
    sample_index: int
    ok: bool
    text: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    cost_usd: Decimal = Decimal(0)
    topk: bytes | None = None
    mean_logprob: float | None = None
    error: str = ""
    attempts: int = 0


@dataclass(frozen=True)
class Decoding:
    system_prompt: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decoding:
        stop = data.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        return cls(
            system_prompt=data.get("system_prompt") or "",
            temperature=data.get("temperature"),
            top_p=data.get("top_p"),
            max_tokens=data.get("max_tokens"),
            stop=tuple(stop),
            seed=data.get("seed"),
            top_logprobs=int(data.get("top_logprobs") or 0),
        )


@dataclass(frozen=True)
class RunnerConfig:
    base_url: str
    model: str
    api_key: str = ""
    concurrency: int = 16
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    timeout: float = 120.0
    max_attempts: int = 5
    price_input_per_m: Decimal = Decimal(0)
    price_output_per_m: Decimal = Decimal(0)
    decoding: Decoding = field(default_factory=Decoding)
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # Results go to the sink as soon as the previous write is done (group commit): a crash loses
    # what is in flight plus what arrived during one write. Raise both to write bigger batches.
    flush_every: int = 1
    flush_interval: float = 0.5
    poll_interval: float = 1.0
    # Which private addresses the teacher may be at (None: DISTILLERY_OUTBOUND_ALLOW); everything
    # else goes through the guard in workers/engine/outbound.py like any user-given URL.
    outbound: OutboundPolicy | None = None


class RunOutcome(StrEnum):
    COMPLETED = "completed"  # every item has a result
    STOPPED = "stopped"  # control() said stop (cancel, lost claim)
    ABORTED = "aborted"  # an error that is the same for every item (401, 403, 404)


@dataclass
class RunSummary:
    outcome: RunOutcome = RunOutcome.COMPLETED
    fatal_error: str = ""
    results: int = 0
    ok: int = 0
    failed: int = 0
    retries: int = 0


Sink = Callable[[list[ItemResult]], Awaitable[None]]
Control = Callable[[], Awaitable[bool]]


def build_messages(messages: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """The prompt's chat messages, with the decoding system prompt first unless it has its own."""
    out = [{"role": m.get("role", "user"), "content": m.get("content", "")} for m in messages]
    if system_prompt and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def request_params(config: RunnerConfig, item: WorkItem) -> dict[str, Any]:
    d = config.decoding
    params: dict[str, Any] = {
        "model": config.model,
        "messages": build_messages(item.messages, d.system_prompt),
    }
    if d.temperature is not None:
        params["temperature"] = d.temperature
    if d.top_p is not None:
        params["top_p"] = d.top_p
    if d.max_tokens is not None:
        params["max_tokens"] = d.max_tokens
    if d.stop:
        params["stop"] = list(d.stop)
    if d.seed is not None:
        # Each sample is its own request; seed+index keeps samples distinct and reproducible.
        params["seed"] = int(d.seed) + item.sample_index
    if d.top_logprobs > 0:
        params["logprobs"] = True
        params["top_logprobs"] = d.top_logprobs
    return params


def estimate_tokens(config: RunnerConfig, item: WorkItem) -> int:
    chars = sum(len(str(m.get("content", ""))) for m in item.messages) + len(
        config.decoding.system_prompt
    )
    return chars // 4 + 8 + (config.decoding.max_tokens or 512)


def cost_of(prompt_tokens: int, completion_tokens: int, config: RunnerConfig) -> Decimal:
    cost = (
        Decimal(prompt_tokens) * config.price_input_per_m
        + Decimal(completion_tokens) * config.price_output_per_m
    ) / _MILLION
    return cost.quantize(_CENT_FRACTION)


def parse_topk(choice: Any) -> tuple[bytes | None, float | None]:
    """Top-k log-probs of `choices[0].logprobs.content` as a DTK1 blob, and the mean log-prob."""
    from workers.engine import topk_format

    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not content:
        return None, None
    tokens: list[str] = []
    alt_tokens: list[list[str]] = []
    alt_lps: list[list[float]] = []
    chosen: list[float] = []
    for entry in content:
        tokens.append(entry.token)
        chosen.append(float(entry.logprob))
        tops = entry.top_logprobs or []
        alt_tokens.append([t.token for t in tops])
        alt_lps.append([max(float(t.logprob), -65504.0) for t in tops])
    record = topk_format.from_token_strings(tokens, alt_tokens, alt_lps)
    finite = [lp for lp in chosen if math.isfinite(lp)]
    mean = sum(finite) / len(finite) if finite else topk_format.mean_logprob(record)
    return topk_format.encode(record), mean


def parse_response(
    resp: Any, config: RunnerConfig, item: WorkItem, attempts: int, latency_ms: int
) -> ItemResult:
    choice = resp.choices[0]
    text = choice.message.content or ""
    usage = getattr(resp, "usage", None)
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    topk, mean = parse_topk(choice) if config.decoding.top_logprobs > 0 else (None, None)
    return ItemResult(
        prompt_id=item.prompt_id,
        sample_index=item.sample_index,
        ok=True,
        text=text,
        finish_reason=str(choice.finish_reason or ""),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_of(prompt_tokens, completion_tokens, config),
        topk=topk,
        mean_logprob=mean,
        attempts=attempts,
    )


def make_client(config: RunnerConfig) -> Any:
    import openai

    return openai.AsyncOpenAI(
        base_url=config.base_url,
        api_key=config.api_key or "not-needed",
        max_retries=0,
        timeout=config.timeout,
        http_client=async_client(config.outbound, timeout=config.timeout),
    )


class _Run:
    def __init__(
        self,
        config: RunnerConfig,
        client: Any,
        sink: Sink,
        control: Control | None,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.client = client
        self.sink = sink
        self.control = control
        self.rng = rng
        self.limiter = RateLimiter(
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
        )
        self.buffer: list[ItemResult] = []
        self.flush_now = asyncio.Event()
        self.stop = asyncio.Event()
        self.summary = RunSummary()
        from openai.types.chat import ChatCompletion

        # `chat.completions.create` runs a typed transform over the params that costs ~3 ms of CPU
        # per request in openai 3.x; our params are plain JSON already, so we post them through the
        # same client (same HTTP stack, errors, timeout and max_retries=0) without that step.
        self.response_type = ChatCompletion

    async def send(self, item: WorkItem) -> ItemResult:
        config = self.config
        params = request_params(config, item)
        estimate = estimate_tokens(config, item)
        attempts = 0
        while True:
            attempts += 1
            await self.limiter.acquire(estimate)
            started = time.perf_counter()
            info: ErrorInfo
            try:
                resp = await self.client.post(
                    "/chat/completions", body=params, cast_to=self.response_type
                )
                latency_ms = int((time.perf_counter() - started) * 1000)
                try:
                    result = parse_response(resp, config, item, attempts, latency_ms)
                except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
                    info = ErrorInfo(
                        f"Unreadable response from the teacher: {type(exc).__name__}: {exc}",
                        retryable=True,
                    )
                else:
                    self.limiter.settle(estimate, result.prompt_tokens + result.completion_tokens)
                    return result
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every client error is classified below
                info = classify(exc)
            self.limiter.settle(estimate, 0)
            if info.fatal_for_job or not info.retryable or attempts >= config.max_attempts:
                suffix = f" (after {attempts} attempts)" if info.retryable else ""
                if info.fatal_for_job and not self.summary.fatal_error:
                    self.summary.fatal_error = info.message
                    self.stop.set()
                return ItemResult(
                    prompt_id=item.prompt_id,
                    sample_index=item.sample_index,
                    ok=False,
                    error=info.message + suffix,
                    attempts=attempts,
                    latency_ms=int((time.perf_counter() - started) * 1000),
                )
            self.summary.retries += 1
            delay = retry_delay(
                info, attempts, base=config.backoff_base, cap=config.backoff_cap, rng=self.rng
            )
            logger.debug(
                "retrying prompt %s/%s in %.2fs: %s",
                item.prompt_id,
                item.sample_index,
                delay,
                info.message,
            )
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
            except TimeoutError:
                continue
            raise asyncio.CancelledError  # stopping: leave the item missing, not failed

    async def worker(self, queue: asyncio.Queue[WorkItem | None]) -> None:
        while not self.stop.is_set():
            item = await queue.get()
            if item is None:
                queue.put_nowait(None)  # let the other workers see the end too
                return
            try:
                result = await self.send(item)
            except asyncio.CancelledError:
                if self.stop.is_set():
                    return
                raise
            self.buffer.append(result)
            self.summary.results += 1
            if result.ok:
                self.summary.ok += 1
            else:
                self.summary.failed += 1
            if len(self.buffer) >= self.config.flush_every:
                self.flush_now.set()

    async def feed(
        self,
        items: Iterable[WorkItem] | AsyncIterable[WorkItem],
        queue: asyncio.Queue[WorkItem | None],
    ) -> None:
        if isinstance(items, AsyncIterable):
            async for item in items:
                if self.stop.is_set():
                    break
                await queue.put(item)
        else:
            for item in items:
                if self.stop.is_set():
                    break
                await queue.put(item)
        await queue.put(None)

    async def flush(self) -> None:
        if self.buffer:
            batch, self.buffer = self.buffer, []
            await self.sink(batch)

    async def supervise(self, workers: asyncio.Future[Any]) -> None:
        """Flush on size or time, poll control(), and stop the workers when told to."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.config.poll_interval
        while not workers.done():
            timeout = min(self.config.flush_interval, max(0.0, next_poll - loop.time()))
            await self._wake(workers, timeout)
            self.flush_now.clear()
            await self.flush()
            if loop.time() >= next_poll:
                # Always move the deadline on: without a control callable a stale deadline would
                # make every wait time out at once and spin the loop.
                next_poll = loop.time() + self.config.poll_interval
                if self.control is not None and not await self.control():
                    self.stop.set()
            if self.stop.is_set() and not workers.done():
                workers.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await workers
        await self.flush()

    async def _wake(self, workers: asyncio.Future[Any], timeout: float) -> None:
        flush = asyncio.ensure_future(self.flush_now.wait())
        stop = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait(
                {flush, stop, workers}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            flush.cancel()
            stop.cancel()


async def run_openai(
    items: Iterable[WorkItem] | AsyncIterable[WorkItem],
    config: RunnerConfig,
    *,
    sink: Sink,
    control: Control | None = None,
    client: Any = None,
    rng: random.Random | None = None,
) -> RunSummary:
    """Send every item; return how the run ended. Idempotent per item only through the sink."""
    own_client = client is None
    client = client or make_client(config)
    run = _Run(config, client, sink, control, rng or random.Random())
    queue: asyncio.Queue[WorkItem | None] = asyncio.Queue(maxsize=max(2, config.concurrency * 2))
    feeder = asyncio.ensure_future(run.feed(items, queue))
    workers = asyncio.gather(*(run.worker(queue) for _ in range(max(1, config.concurrency))))
    try:
        await run.supervise(workers)
        error = None if workers.cancelled() else workers.exception()
        if error is not None and not isinstance(error, asyncio.CancelledError):
            raise error
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feeder
        if not workers.done():
            workers.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await workers
        if own_client:
            await client.close()
    if run.summary.fatal_error:
        run.summary.outcome = RunOutcome.ABORTED
    elif run.stop.is_set():
        run.summary.outcome = RunOutcome.STOPPED
    return run.summary
