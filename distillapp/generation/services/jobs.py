"""Writes of generation jobs that people start: launch, cancel, resume, retry failed items.

The lifecycle itself (claim, cancel, resume, sweep) is the one every run shares:
`distillapp.core.runs.services`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError

from distillapp.core.runs.services import run_cancel, run_enqueue, run_requeue, run_resume
from distillapp.generation.decoding import MAX_SAMPLES
from distillapp.generation.models import (
    ENDED_STATUSES,
    CompletionStatus,
    GenerationJob,
    JobStatus,
    Teacher,
)
from distillapp.generation.services.teachers import teacher_snapshot
from distillapp.prompts.selectors import prompts_for_generation

if TYPE_CHECKING:
    from distillapp.projects.models import Project
    from distillapp.prompts.models import PromptSet


def generation_job_start(
    *,
    project: Project,
    prompt_set: PromptSet,
    teacher: Teacher,
    samples_per_prompt: int | None = None,
    q: str | None = None,
    metadata: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    created_by: Any = None,
) -> GenerationJob:
    """Freeze the teacher's settings into a new queued job and enqueue it (after commit).

    Prompts come only from `prompts_for_generation`, so held-out prompts never reach a teacher.
    """
    if prompt_set.project_id != project.pk or teacher.project_id != project.pk:
        raise ValidationError("The prompt set and the teacher must belong to this project.")
    errors: dict[str, list[str]] = {}
    try:
        snapshot = teacher_snapshot(teacher=teacher, overrides=overrides)
    except ValidationError as exc:
        raise ValidationError(
            {
                f"overrides.{k}" if k != "decoding" else "overrides": v
                for k, v in exc.message_dict.items()
            }
        ) from exc
    n = (
        samples_per_prompt
        if samples_per_prompt not in (None, "")
        else snapshot["decoding"].get("n", 1)
    )
    try:
        n = int(n)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_SAMPLES:
        errors["samples_per_prompt"] = [f"Samples per prompt must be between 1 and {MAX_SAMPLES}."]
    metadata = {str(k): str(v) for k, v in (metadata or {}).items() if str(k).strip()}
    q = (q or "").strip() or None
    count = prompts_for_generation(prompt_set=prompt_set, q=q, metadata=metadata).count()
    if count == 0 and not errors:
        errors["prompt_set"] = [
            "No train prompts match. Held-out prompts are never sent to a teacher."
        ]
    if errors:
        raise ValidationError(errors)
    snapshot["decoding"]["n"] = n
    job = GenerationJob.objects.create(
        project=project,
        prompt_set=prompt_set,
        teacher=teacher,
        teacher_snapshot=snapshot,
        samples_per_prompt=n,
        prompt_filter={"q": q, "metadata": metadata},
        status=JobStatus.QUEUED,
        total=count * n,
        created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
    )
    run_enqueue(job)
    return job


def generation_job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Queued → cancelled; running → cancelling (the worker stops within seconds and keeps its work).

    A running job whose worker is gone (stale heartbeat) is cancelled at once.
    """
    try:
        return run_cancel(job)
    except ValidationError:
        raise ValidationError(
            f"A {job.get_status_display().lower()} job cannot be cancelled."
        ) from None


def generation_job_resume(*, job: GenerationJob) -> GenerationJob:
    """Cancelled or failed → queued: the next run sends only the items that have no completion yet.

    A running job whose worker stopped heart-beating is re-sent as it is: the next worker takes it
    over (the same path as the sweep).
    """
    try:
        return run_resume(job, retry_failed=False)
    except ValidationError:
        raise ValidationError("Only a cancelled or failed job can be resumed.") from None


def generation_job_retry_failed(*, job: GenerationJob) -> GenerationJob:
    """An ended job with failed items → queued: the next run regenerates the failed items (and any
    never sent, for a job that was cancelled); completions that succeeded are never sent again."""
    if (
        job.status not in ENDED_STATUSES
        or not job.completions.filter(status=CompletionStatus.FAILED).exists()
    ):
        raise ValidationError("Only a finished job with failed items can retry them.")
    return run_requeue(
        job,
        from_statuses=ENDED_STATUSES,
        refusal="The job changed; reload the page.",
        retry_failed=True,
    )
