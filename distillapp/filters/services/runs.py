"""Filter runs on the shared run lifecycle: start, the automatic run of a finished job, queue,
cancel, and the worker's entry point. Idempotent: a second delivery gets no claim; verdicts are
upserts, and judge scores of the same judge are reused, so a re-run pays for nothing twice."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from distillapp.core.queues import Queue
from distillapp.core.runs.services import (
    ClaimLost,
    ClaimState,
    RunCancelled,
    run_cancel,
    run_claim,
    run_end,
    run_enqueue,
    run_fail,
)
from distillapp.filters.models import FilterRun, RunStatus
from distillapp.filters.selectors import filter_config_for_project, filter_run_active
from distillapp.filters.services.pipeline import _execute
from distillapp.projects.models import Project

logger = logging.getLogger(__name__)


def filter_run_start(*, project: Project, user: Any, job: Any = None) -> FilterRun:
    """Queue a run over one job's completions or the whole project; one active run per project."""
    if job is not None and job.project_id != project.pk:
        raise ValidationError({"job_id": ["That job is not in this project."]})
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        active = filter_run_active(project=project)
        if active is not None:
            raise ValidationError(
                f"A filter run ({active.scope_label}) is already {active.status}; wait for it to finish."
            )
        run = FilterRun.objects.create(
            project=project,
            job=job,
            created_by=user if getattr(user, "pk", None) else None,
            message="Waiting for a worker.",
        )
        run_enqueue(run)
    return run


def filters_start_for_job(*, job: Any) -> FilterRun:
    """Queue the automatic filter run of a job that just finished (called inside the transaction
    that ends the job, which only one worker can commit, so a job gets one such run)."""
    run = FilterRun.objects.create(
        project_id=job.project_id, job=job, trigger="job_finished", message="Waiting for a worker."
    )
    run_enqueue(run)
    return run


def filters_queue(project: Project) -> Queue:
    """Where the project's filter runs execute: a local judge model is loaded by the run itself,
    so with one the run goes to a `gpu` worker (torch, the model's folder); else `default`."""
    from distillapp.generation.models import Teacher, TeacherKind

    judge_id = filter_config_for_project(project=project).judge_teacher_id
    if judge_id is None:
        return Queue.DEFAULT
    local = Teacher.objects.filter(pk=judge_id, project=project, kind=TeacherKind.HF_LOCAL)
    return Queue.GPU if local.exists() else Queue.DEFAULT


def filter_run_cancel(*, run: FilterRun) -> FilterRun:
    """Queued → cancelled; running → cancelling (the worker stops at its next progress write)."""
    return run_cancel(run)


def filter_run_execute(*, run_id: int) -> FilterRun | None:
    """Claim and run a FilterRun (or take over one whose worker died). Idempotent: a second
    delivery of the same task gets no claim and returns None; verdicts are upserts."""
    claim = run_claim(FilterRun, pk=run_id)
    if claim.state != ClaimState.CLAIMED or claim.run is None:
        return None
    run = FilterRun.objects.select_related("project", "job").get(pk=run_id)
    token = claim.token
    try:
        _execute(run, token)
    except ClaimLost:
        logger.warning("filter run %s: another worker took it over; this one stops.", run_id)
        return None
    except RunCancelled:
        run_end(FilterRun, pk=run_id, token=token, status=RunStatus.CANCELLED, message="Cancelled.")
    except Exception as exc:
        logger.exception("filter run %s failed", run_id)
        run_fail(FilterRun, pk=run_id, token=token, message=f"Failed: {type(exc).__name__}: {exc}")
        raise
    run.refresh_from_db()
    return run
