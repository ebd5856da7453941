"""The app-side drivers of generation jobs: claim the job, feed its pending items to a Django-free
runner in `workers.engine`, write results through the services, finish. Called by a thin task."""

from __future__ import annotations

from distillapp.generation.models import GenerationJob, TeacherKind


def generation_job_run(*, job_id: int) -> str:
    """Run (or resume, or take over) a job with the driver of its teacher's kind. Idempotent: the
    job's claim decides whether this call does anything ("busy", "ended" when it does not)."""
    snapshot = GenerationJob.objects.filter(pk=job_id).values_list("teacher_snapshot", flat=True)
    kind = (snapshot.first() or {}).get("kind")
    if kind == TeacherKind.HF_LOCAL:
        from distillapp.generation.runners.local import run_local_job

        return run_local_job(job_id)
    from distillapp.generation.runners.api import run_api_job

    return run_api_job(job_id)
