"""Tasks of API teachers (queue `teacher`): one task runs a whole generation job with asyncio."""

from __future__ import annotations

import logging

from celery.signals import worker_ready

from distillapp.generation.services import ClaimState
from workers.app import app

logger = logging.getLogger(__name__)


@app.task(
    bind=True,
    name="workers.tasks.teacher.run_generation_job",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_generation_job(self, job_id: int) -> str:  # type: ignore[no-untyped-def]
    """Run (or resume) a generation job of an API teacher. Idempotent: the job's claim decides.

    A copy delivered while a live worker runs the job ("busy") checks again after the stale
    period, so if that worker dies the job is still taken over.
    """
    from django.conf import settings

    from workers.teachers.jobrun import run_api_job

    result = run_api_job(job_id)
    if result == ClaimState.BUSY and not app.conf.task_always_eager:
        self.apply_async((job_id,), countdown=settings.GENERATION_STALE_SECONDS)
    return result


@app.task(name="workers.tasks.teacher.recover_generation_jobs", ignore_result=True)
def recover_generation_jobs() -> list[int]:
    """Re-enqueue jobs whose worker died (stale heartbeat). Runs at every worker start."""
    from distillapp.generation.services import generation_jobs_recover

    return generation_jobs_recover()


@worker_ready.connect
def _recover_on_start(sender: object = None, **kwargs: object) -> None:
    # A worker that starts may be the replacement of one that was killed mid-job.
    try:
        from distillapp.generation.services import generation_jobs_recover

        recovered = generation_jobs_recover()
        if recovered:
            logger.info("re-enqueued generation jobs with a stale heartbeat: %s", recovered)
    except Exception:  # noqa: BLE001 - never keep a worker from starting
        logger.exception("could not recover generation jobs at worker start")
