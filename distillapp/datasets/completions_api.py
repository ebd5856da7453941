"""REST API of the completions browser: every member reads; outsiders get 404."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema

from distillapp.datasets import completions_selectors as selectors
from distillapp.generation.access import get_completion_for_user
from distillapp.projects.access import get_project_for_user

router = Router(tags=["completions"])


class CompletionRowOut(Schema):
    id: int
    job_id: int
    prompt_id: int
    prompt_set_id: int
    sample_index: int
    status: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    cost_usd: str
    created_at: datetime
    verdict: str | None
    flags: list[str]
    judge_score: float | None
    review_state: str | None
    decision: str | None
    edited: bool
    text_preview: str
    prompt_preview: str


class CompletionPageOut(Schema):
    items: list[CompletionRowOut]
    next_cursor: str | None


class TopkSummaryOut(Schema):
    bytes: int
    tokens: int | None = None
    k: int | None = None
    tokens_with_topk: int | None = None
    mean_logprob: float | None = None
    token_ids: bool | None = None
    error: str | None = None


class SiblingOut(Schema):
    id: int
    sample_index: int
    status: str
    text_preview: str
    verdict: str | None
    judge_score: float | None
    decision: str | None
    best_pick: bool


class VerdictOut(Schema):
    state: str
    flags: list[str]
    reasons: dict[str, str]
    judge_score: float | None
    judge_rationale: str
    judge_error: str
    duplicate_of: int | None


class ReviewStateOut(Schema):
    state: str
    decision: str | None
    target_text: str | None
    reviews_count: int
    decided_at: datetime | None
    adjudicated_by: str | None
    bulk: bool


class ReviewOut(Schema):
    reviewer: str
    decision: str
    reason: str
    edited_text: str | None
    original_text: str
    created_at: datetime
    updated_at: datetime


class PromptOut(Schema):
    id: int
    prompt_set_id: int
    prompt_set: str
    split: str
    messages: list[dict[str, str]]
    reference: str | None


class CompletionDetailOut(Schema):
    id: int
    project_id: int
    job_id: int
    teacher: str
    sample_index: int
    status: str
    text: str
    error: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    cost_usd: str
    attempts: int
    created_at: datetime
    best_pick: bool
    prompt: PromptOut
    siblings: list[SiblingOut]
    verdict: VerdictOut | None
    review: ReviewStateOut | None
    reviews: list[ReviewOut]
    topk: TopkSummaryOut | None


@router.get("/projects/{project_id}/completions", response=CompletionPageOut)
def list_completions(
    request: HttpRequest,
    project_id: int,
    cursor: str = "",
    job: int | None = None,
    prompt_set: int | None = None,
    status: str = "",
    verdict: str = "",
    flag: str = "",
    review: str = "",
    reviewer: int | None = None,
    score_min: float | None = None,
    score_max: float | None = None,
    q: str = "",
    limit: int = selectors.PAGE_SIZE,
) -> Any:
    """Every completion of the project, newest first, one keyset page at a time (`next_cursor`).
    Filters combine with AND; `review` is one of approved, edited, rejected, adjudication,
    pending, excluded, none; `verdict` a filter state or none; `q` full-text search."""
    project, _m = get_project_for_user(request.user, project_id)
    filters = selectors.completion_filters_parse(
        {
            "job": job,
            "prompt_set": prompt_set,
            "status": status,
            "verdict": verdict,
            "flag": flag,
            "review": review,
            "reviewer": reviewer,
            "score_min": score_min,
            "score_max": score_max,
            "q": q,
        }
    )
    page = selectors.completions_page(
        project=project, filters=filters, cursor=cursor or None, limit=limit
    )
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/completions/{completion_id}", response=CompletionDetailOut)
def get_completion(request: HttpRequest, completion_id: int) -> Any:
    completion, _m = get_completion_for_user(request.user, completion_id)
    return selectors.completion_detail(completion=completion)
