from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.responses import Status

from distillapp.accounts.models import Role
from distillapp.generation.access import get_completion_for_user
from distillapp.generation.models import Completion
from distillapp.projects.access import get_project_for_user
from distillapp.review import selectors, services
from distillapp.review.models import Review, ReviewLease

router = Router(tags=["review"])


class DecisionIn(Schema):
    decision: str
    reason: str | None = None
    edited_text: str | None = None
    duration_ms: int | None = None


def _completion_json(completion: Completion, reviewer: Any) -> dict[str, Any]:
    ctx = selectors.completion_for_review(completion=completion, reviewer=reviewer)
    verdict = ctx["verdict"]
    lease = ReviewLease.objects.filter(completion=completion, reviewer=reviewer).first()
    return {
        "id": completion.pk,
        "job_id": completion.job_id,
        "sample_index": completion.sample_index,
        "prompt": {"id": completion.prompt_id, "messages": ctx["messages"]},
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "completion_tokens": completion.completion_tokens,
        "latency_ms": completion.latency_ms,
        "mean_logprob": completion.mean_logprob,
        "teacher": completion.job.teacher_snapshot or {},
        "verdict": None
        if verdict is None
        else {
            "state": verdict.state,
            "flags": verdict.flags,
            "reasons": verdict.reasons,
            "judge_score": verdict.judge_score,
        },
        "siblings": [s.pk for s in ctx["siblings"]],
        "best_id": ctx["best_id"],
        "lease_expires_at": lease.expires_at.isoformat() if lease else None,
    }


def _review_json(review: Review) -> dict[str, Any]:
    return {
        "id": review.pk,
        "completion_id": review.completion_id,
        "reviewer": review.reviewer.get_username(),
        "decision": review.decision,
        "reason": review.reason,
        "edited_text": review.edited_text,
        "original_text": review.original_text,
        "duration_ms": review.duration_ms,
        "created_at": review.created_at.isoformat(),
        "updated_at": review.updated_at.isoformat(),
    }


@router.post("/projects/{project_id}/review/next", response={200: dict, 204: None})
def review_next(request: HttpRequest, project_id: int) -> Any:
    project, _m = get_project_for_user(request.user, project_id, Role.REVIEWER)
    services.review_queue_sync(project=project)
    completion = services.review_claim_next(project=project, reviewer=request.user)
    if completion is None:
        return Status(204, None)
    return Status(200, _completion_json(completion, request.user))


@router.post("/completions/{completion_id}/review", response=dict)
def review_submit(request: HttpRequest, completion_id: int, payload: DecisionIn) -> Any:
    completion, _membership = get_completion_for_user(request.user, completion_id, Role.REVIEWER)
    review = services.review_decide(
        completion=completion,
        reviewer=request.user,
        decision=payload.decision,
        reason=payload.reason,
        edited_text=payload.edited_text,
        duration_ms=payload.duration_ms,
    )
    return _review_json(review)


@router.post("/projects/{project_id}/review/undo", response=dict)
def review_undo(request: HttpRequest, project_id: int) -> Any:
    project, _m = get_project_for_user(request.user, project_id, Role.REVIEWER)
    completion = services.review_undo(project=project, reviewer=request.user)
    return {
        "undone": True,
        "completion": _completion_json(completion, request.user)
        if completion is not None
        else None,
    }


@router.get("/projects/{project_id}/review/stats", response=dict)
def review_stats(request: HttpRequest, project_id: int) -> Any:
    project, _m = get_project_for_user(request.user, project_id, Role.REVIEWER)
    return selectors.review_stats(project=project, reviewer=request.user)


@router.get("/projects/{project_id}/review/judge-agreement", response=dict)
def review_judge_agreement(request: HttpRequest, project_id: int) -> Any:
    """`{"agreement": {agree, total, rate}}`: how often the filters' LLM judge agrees with human
    reviews (viewers and up). It was `agreement` in `GET …/filters/summary` before it moved here."""
    project, _m = get_project_for_user(request.user, project_id)
    return {"agreement": selectors.judge_agreement(project=project)}
