from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Body, Router, Schema, Status

from distillapp.accounts.models import Role
from distillapp.core.cursor import decode_cursor, encode_cursor
from distillapp.filters import services
from distillapp.filters.config import FILTER_NAMES
from distillapp.filters.models import CompletionVerdict, FilterRun, VerdictState
from distillapp.filters.selectors import (
    filter_config_for_project,
    filter_runs_recent,
    filter_summary,
    verdicts_for_project,
)
from distillapp.generation.access import get_completion_for_user
from distillapp.projects.access import get_project_for_user

router = Router(tags=["filters"])


class RunIn(Schema):
    job_id: int | None = None


class RunOut(Schema):
    id: int
    project_id: int
    job_id: int | None
    status: str
    trigger: str
    done: int
    total: int
    message: str
    counts: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


class VerdictOut(Schema):
    completion_id: int
    state: str
    flags: list[str]
    reasons: dict[str, str]
    judge_score: float | None
    judge_rationale: str
    judge_error: str  # why the judge gave no score; empty when it scored or did not run
    judge_reply: str  # the start of an unreadable judge reply (up to 2,000 characters)
    duplicate_of_id: int | None
    restored_by: str | None
    restored_at: datetime | None
    updated_at: datetime


class VerdictPage(Schema):
    items: list[VerdictOut]
    next_cursor: str | None


def _run_out(run: FilterRun) -> RunOut:
    return RunOut(
        id=run.pk,
        project_id=run.project_id,
        job_id=run.job_id,
        status=run.status,
        trigger=run.trigger,
        done=run.done,
        total=run.total,
        message=run.message,
        counts=run.counts or {},
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


def _verdict_out(v: CompletionVerdict) -> VerdictOut:
    return VerdictOut(
        completion_id=v.completion_id,
        state=v.state,
        flags=list(v.flags or []),
        reasons=dict(v.reasons or {}),
        judge_score=v.judge_score,
        judge_rationale=v.judge_rationale,
        judge_error=v.judge_error,
        judge_reply=v.judge_reply,
        duplicate_of_id=v.duplicate_of_id,
        restored_by=v.restored_by.username if v.restored_by else None,
        restored_at=v.restored_at,
        updated_at=v.updated_at,
    )


@router.post("/projects/{project_id}/filters/run", response={202: RunOut})
def run_filters(request: HttpRequest, project_id: int, payload: RunIn) -> Status:
    """Queue a filter run over one job (`job_id`) or the whole project. Admins only."""
    from distillapp.generation.models import GenerationJob

    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    job = None
    if payload.job_id is not None:
        job = GenerationJob.objects.filter(pk=payload.job_id, project=project).first()
        if job is None:
            raise Http404("Not found.")
    run = services.filter_run_start(project=project, user=request.user, job=job)
    return Status(202, _run_out(run))


@router.get("/projects/{project_id}/filters/runs", response=list[RunOut])
def list_runs(request: HttpRequest, project_id: int) -> list[RunOut]:
    project, _m = get_project_for_user(request.user, project_id)
    return [_run_out(r) for r in filter_runs_recent(project=project, limit=20)]


@router.get("/projects/{project_id}/filters/summary", response=dict[str, Any])
def summary(request: HttpRequest, project_id: int) -> dict[str, Any]:
    project, _m = get_project_for_user(request.user, project_id)
    return filter_summary(project=project)


@router.get("/projects/{project_id}/filters/config", response=dict[str, Any])
def get_config(request: HttpRequest, project_id: int) -> dict[str, Any]:
    project, _m = get_project_for_user(request.user, project_id)
    return filter_config_for_project(project=project).as_dict()


@router.put("/projects/{project_id}/filters/config", response=dict[str, Any])
def put_config(
    request: HttpRequest,
    project_id: int,
    payload: dict[str, Any] = Body(...),  # noqa: B008
) -> dict[str, Any]:
    """Replace the filter settings; keys left out take their defaults. 422 with per-field errors."""
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    return services.filter_config_update(project=project, data=payload).as_dict()


@router.get("/projects/{project_id}/filters/verdicts", response=VerdictPage)
def list_verdicts(
    request: HttpRequest,
    project_id: int,
    state: str | None = None,
    flag: str | None = None,
    job_id: int | None = None,
    cursor: str | None = None,
    limit: int = 100,
    judge_error: bool = False,
) -> VerdictPage:
    """Verdicts in id order; `judge_error=true`: only those the judge could not score."""
    project, _m = get_project_for_user(request.user, project_id)
    states = [s for s in (state or "").split(",") if s in VerdictState.values] or None
    limit = max(1, min(limit, 500))
    items = verdicts_for_project(
        project=project,
        states=states,
        flag=flag if flag in FILTER_NAMES else None,
        job_id=job_id,
        after_id=decode_cursor(cursor),
        limit=limit,
        judge_error=judge_error,
    )
    return VerdictPage(
        items=[_verdict_out(v) for v in items],
        next_cursor=encode_cursor(items[-1].pk) if len(items) == limit else None,
    )


@router.get("/completions/{completion_id}/verdict", response=VerdictOut | None)
def get_verdict(request: HttpRequest, completion_id: int) -> VerdictOut | None:
    """The filters' verdict on a completion; null until the filters have checked it."""
    completion, _m = get_completion_for_user(request.user, completion_id)
    verdict = (
        CompletionVerdict.objects.select_related("restored_by")
        .filter(completion=completion)
        .first()
    )
    return _verdict_out(verdict) if verdict else None


@router.post("/completions/{completion_id}/review/restore", response=VerdictOut)
def restore(request: HttpRequest, completion_id: int) -> VerdictOut:
    """Keep a filtered-out completion (reviewers and up). Flags and reasons stay."""
    completion, _m = get_completion_for_user(request.user, completion_id, Role.REVIEWER)
    return _verdict_out(services.verdict_restore(completion=completion, user=request.user))


@router.post("/completions/{completion_id}/review/unrestore", response=VerdictOut)
def unrestore(request: HttpRequest, completion_id: int) -> VerdictOut:
    completion, _m = get_completion_for_user(request.user, completion_id, Role.REVIEWER)
    return _verdict_out(services.verdict_unrestore(completion=completion, user=request.user))
