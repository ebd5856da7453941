"""Tasks of generation jobs. Sent on `teacher` for API teachers and on `gpu` for local ones (the
job's run kind decides: distillapp.generation.apps); thin: take the id, call the driver."""

from __future__ import annotations

from workers.app import app


@app.task(
    name="workers.tasks.generation.run_generation_job",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_generation_job(job_id: int) -> str:
    """Run, resume or take over a generation job. Idempotent: the job's claim decides; a copy
    delivered while a live worker runs the job returns "busy" and the sweep covers that worker."""
    from distillapp.generation.runners import generation_job_run

    return generation_job_run(job_id=job_id)
