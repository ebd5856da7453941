"""Tasks of GPU workers (queue `gpu`, `-c 1` per GPU): local-teacher generation jobs.

torch and transformers are imported inside the task, never at import time: the web imports this
module to enqueue.
"""

from __future__ import annotations

from workers.app import app


@app.task(
    bind=True,
    name="workers.tasks.gpu.run_local_generation_job",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_local_generation_job(self, job_id: int) -> str:  # type: ignore[no-untyped-def]
    """Run (or resume) a generation job of a local teacher. Idempotent: the job's claim decides."""
    from django.conf import settings

    from workers.teachers.local import run_local_job

    result = run_local_job(job_id)
    if result == "busy" and not app.conf.task_always_eager:
        self.apply_async((job_id,), countdown=settings.GENERATION_STALE_SECONDS)
    return result
