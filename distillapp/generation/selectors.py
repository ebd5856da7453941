"""Reads of the generation app: teachers, jobs, progress, completions and a job's work list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import QuerySet
from django.utils import timezone

from distillapp.generation.models import (
    Completion,
    CompletionStatus,
    GenerationJob,
    JobStatus,
    Teacher,
)
from distillapp.prompts.models import chat_messages
from distillapp.prompts.selectors import prompts_for_generation

if TYPE_CHECKING:
    from distillapp.projects.models import Project
    from workers.engine.teachers.openai_runner import WorkItem


def teachers_for_project(*, project: Project) -> QuerySet[Teacher]:
    return Teacher.objects.filter(project=project).order_by("name")


def jobs_for_project(*, project: Project, limit: int | None = 20) -> QuerySet[GenerationJob]:
    qs = (
        GenerationJob.objects.filter(project=project)
        .select_related("prompt_set", "teacher", "created_by")
        .order_by("-created_at", "-id")
    )
    return qs[:limit] if limit else qs


@dataclass(frozen=True)
class JobProgress:
    total: int
    done: int
    failed: int
    remaining: int
    percent_done: float
    percent_failed: float
    throughput: float | None  # items per second in the current run
    eta_seconds: float | None
    elapsed_seconds: float | None
    heartbeat_age: float | None


def job_progress(*, job: GenerationJob) -> JobProgress:
    total = max(job.total, 0)
    finished = job.done + job.failed
    remaining = max(0, total - finished)
    now = timezone.now()
    throughput = eta = elapsed = None
    if job.run_started_at:
        end = job.finished_at if job.finished_at and job.finished_at > job.run_started_at else now
        elapsed = max((end - job.run_started_at).total_seconds(), 0.001)
        in_run = finished - job.run_start_count
        if in_run > 0:
            throughput = in_run / elapsed
            if job.status == JobStatus.RUNNING and remaining:
                eta = remaining / throughput
    heartbeat_age = (now - job.heartbeat_at).total_seconds() if job.heartbeat_at else None
    return JobProgress(
        total=total,
        done=job.done,
        failed=job.failed,
        remaining=remaining,
        percent_done=round(100.0 * job.done / total, 2) if total else 0.0,
        percent_failed=round(100.0 * job.failed / total, 2) if total else 0.0,
        throughput=throughput,
        eta_seconds=eta,
        elapsed_seconds=elapsed,
        heartbeat_age=heartbeat_age,
    )


def job_recent_errors(*, job: GenerationJob, limit: int = 8) -> QuerySet[Completion]:
    return (
        Completion.objects.filter(job=job, status=CompletionStatus.FAILED)
        .select_related("prompt")
        .order_by("-id")[:limit]
    )


def job_recent_completions(*, job: GenerationJob, limit: int = 5) -> QuerySet[Completion]:
    return (
        Completion.objects.filter(job=job, status=CompletionStatus.OK)
        .select_related("prompt")
        .order_by("-id")[:limit]
    )


def job_completions_page(
    *, job: GenerationJob, after_id: int | None, limit: int = 100, status: str | None = None
) -> list[Completion]:
    qs = Completion.objects.filter(job=job).select_related("prompt").order_by("id")
    if status:
        qs = qs.filter(status=status)
    if after_id is not None:
        qs = qs.filter(id__gt=after_id)
    return list(qs[:limit])


def generation_job_pending_items(
    *, job: GenerationJob, after_prompt_id: int = 0, limit: int = 500
) -> tuple[list[WorkItem], int | None]:
    """One page of the job's work list, in prompt order: (prompt, sample index) pairs without a
    completion that succeeded (failed ones too when the job retries them). Returns the items and the
    last prompt id looked at, or None when the prompts are exhausted."""
    from workers.engine.teachers.openai_runner import WorkItem

    f = job.prompt_filter or {}
    prompts = list(
        prompts_for_generation(prompt_set=job.prompt_set, q=f.get("q"), metadata=f.get("metadata"))
        .filter(id__gt=after_prompt_id)
        .order_by("id")
        .values_list("id", "messages", "text")[:limit]
    )
    if not prompts:
        return [], None
    ids = [pid for pid, _, _ in prompts]
    skip = (
        {CompletionStatus.OK}
        if job.retry_failed
        else {CompletionStatus.OK, CompletionStatus.FAILED}
    )
    have = {
        (pid, idx)
        for pid, idx, status in Completion.objects.filter(job=job, prompt_id__in=ids).values_list(
            "prompt_id", "sample_index", "status"
        )
        if status in skip
    }
    items: list[WorkItem] = [
        WorkItem(prompt_id=pid, sample_index=s, messages=chat_messages(messages, text))
        for pid, messages, text in prompts
        for s in range(job.samples_per_prompt)
        if (pid, s) not in have
    ]
    return items, ids[-1]
