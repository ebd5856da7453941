"""Runs a generation job of an API teacher: the Django side around the plain asyncio runner.

The task's thread claims the job and finishes it; inside the run, every database call goes to one
dedicated thread (its own connection, closed at the end), so the event loop never blocks on the
database and Django's connection rules hold. Work items are fetched page by page as the runner
needs them, so a job of a million prompts never sits whole in memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections, connections

from distillapp.core.outbound import outbound_policy
from distillapp.generation import selectors, services
from distillapp.generation.models import GenerationJob, JobStatus
from workers.engine.teachers.openai_runner import (
    Decoding,
    ItemResult,
    RunnerConfig,
    RunOutcome,
    WorkItem,
    run_openai,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_SIZE = 500


def runner_config(job: GenerationJob, *, api_key: str) -> RunnerConfig:
    snap = job.teacher_snapshot
    return RunnerConfig(
        base_url=snap["base_url"],
        model=snap["model"],
        api_key=api_key,
        concurrency=int(snap.get("concurrency") or 16),
        requests_per_minute=snap.get("requests_per_minute"),
        tokens_per_minute=snap.get("tokens_per_minute"),
        timeout=float(settings.TEACHER_REQUEST_TIMEOUT),
        max_attempts=int(settings.TEACHER_MAX_ATTEMPTS),
        price_input_per_m=Decimal(snap.get("price_input_per_m") or 0),
        price_output_per_m=Decimal(snap.get("price_output_per_m") or 0),
        decoding=Decoding.from_dict(snap.get("decoding") or {}),
        backoff_base=float(settings.TEACHER_BACKOFF_BASE),
        backoff_cap=float(settings.TEACHER_BACKOFF_CAP),
        outbound=outbound_policy(),
    )


def _api_key(job: GenerationJob) -> str:
    teacher = job.teacher
    if teacher is None:
        return ""
    return services.teacher_api_key(teacher)


class _DbThread:
    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generation-db")

    async def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, **kwargs))

    def close(self) -> None:
        self.pool.submit(connections.close_all).result()
        self.pool.shutdown(wait=True)


async def _run(job: GenerationJob, token: str, config: RunnerConfig, db: _DbThread) -> Any:
    async def items() -> AsyncIterator[WorkItem]:
        after = 0
        while True:
            page, last = await db.call(
                selectors.generation_job_pending_items,
                job=job,
                after_prompt_id=after,
                limit=PAGE_SIZE,
            )
            if last is None:
                return
            for item in page:
                yield item
            after = last

    async def sink(batch: list[ItemResult]) -> None:
        await db.call(
            services.generation_job_write_results, job_id=job.pk, token=token, results=batch
        )

    async def control() -> bool:
        status = await db.call(services.generation_job_heartbeat, job_id=job.pk, token=token)
        if status is None:
            raise services.ClaimLost(job.pk)
        return status == JobStatus.RUNNING

    return await run_openai(items(), config, sink=sink, control=control)


def run_api_job(job_id: int) -> str:
    """Claim the job and run it to the end (or until cancelled, or the claim is lost).

    Safe to call twice: a second call for a job a live worker runs returns "busy"; for an ended
    job "ended"; for a job whose worker died it takes over and sends only what is missing.
    """
    claim = services.generation_job_claim(job_id=job_id)
    if claim.state != services.ClaimState.CLAIMED:
        return claim.state.value
    job, token = claim.run, claim.token
    assert job is not None
    db = _DbThread()
    try:
        config = runner_config(job, api_key=_api_key(job))
        summary = asyncio.run(_run(job, token, config, db))
    except services.ClaimLost:
        logger.warning("generation job %s: another worker took it over; this run stops.", job_id)
        return "lost"
    except BaseException as exc:
        logger.exception("generation job %s crashed", job_id)
        close_old_connections()
        services.generation_job_fail(
            job_id=job_id, token=token, message=f"The worker stopped: {type(exc).__name__}: {exc}"
        )
        if isinstance(exc, Exception):
            return "failed"
        raise
    finally:
        db.close()
    close_old_connections()
    try:
        services.generation_job_finish(
            job_id=job_id,
            token=token,
            outcome=summary.outcome.value,
            fatal_error=summary.fatal_error,
        )
    except services.ClaimLost:
        return "lost"
    return summary.outcome.value if summary.outcome != RunOutcome.COMPLETED else "completed"
