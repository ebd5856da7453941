"""Reads of the completions browser: every completion of a project, keyset-paged (newest first)
and filtered, and one completion with everything known about it.

Each filter is one indexed condition on PostgreSQL (see docs/datasets.md, "Completions browser"):
the page walks the completions' primary key backwards and stops after `limit + 1` matches, so a
page costs the same at 1M completions as at 1k when the filter matches often; rare matches are
found through the filter's own index (verdict state / judge score, review state, reviewer,
full-text GIN index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import BooleanField, Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Left

from distillapp.core.cursor import decode_cursor, encode_cursor
from distillapp.filters.models import CompletionVerdict, VerdictState
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob
from distillapp.projects.models import Project
from distillapp.prompts.models import PromptSet, chat_messages
from distillapp.prompts.selectors import FTS_QUERY_SQL
from distillapp.review.models import BestPick, FinalDecision, ItemState, Review
from workers.engine import topk_format

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_QUERY_CHARS = 500
PREVIEW_CHARS = 300
# The same expression as the GIN index of migration 0002_completion_text_fts (PostgreSQL), so the planner uses it.
FTS_MATCH_SQL = (
    f"""to_tsvector('english'::regconfig, "generation_completion"."text") @@ {FTS_QUERY_SQL}"""
)

# review=… values: what the review queue decided (or not) about a completion.
REVIEW_STATES = ("approved", "edited", "rejected", "adjudication", "pending", "excluded", "none")
STATUSES = tuple(CompletionStatus.values)
VERDICTS = (*VerdictState.values, "none")


@dataclass(frozen=True)
class CompletionFilters:
    job: int | None = None
    prompt_set: int | None = None
    status: str = ""
    verdict: str = ""
    flag: str = ""
    review: str = ""
    reviewer: int | None = None
    score_min: float | None = None
    score_max: float | None = None
    q: str = ""

    def as_query(self) -> dict[str, str]:
        """The non-empty filters as query-string values (for "load more" links)."""
        return {k: str(v) for k, v in self.__dict__.items() if v not in (None, "")}

    @property
    def any(self) -> bool:
        return bool(self.as_query())


def _clean(value: Any) -> str:
    # PostgreSQL text cannot hold NUL.
    return str(value or "").replace("\x00", "").strip()[:MAX_QUERY_CHARS]


def _id(value: Any, name: str, errors: dict[str, list[str]]) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors.setdefault(name, []).append("Must be an id.")
        return None
    if not 0 < number < 2**63:
        errors.setdefault(name, []).append("Must be an id.")
        return None
    return number


def _score(value: Any, name: str, errors: dict[str, list[str]]) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        errors.setdefault(name, []).append("Must be a number.")
        return None
    if number != number or number in (float("inf"), float("-inf")):
        errors.setdefault(name, []).append("Must be a finite number.")
        return None
    return number


def _choice(value: Any, name: str, allowed: tuple[str, ...], errors: dict[str, list[str]]) -> str:
    value = _clean(value)
    if value and value not in allowed:
        errors.setdefault(name, []).append(f"Must be one of {', '.join(allowed)}.")
        return ""
    return value


def completion_filters_parse(data: Any) -> CompletionFilters:
    """Filters from a query dict (page or API); raises ValidationError naming each bad field."""
    errors: dict[str, list[str]] = {}
    filters = CompletionFilters(
        job=_id(data.get("job"), "job", errors),
        prompt_set=_id(data.get("prompt_set"), "prompt_set", errors),
        status=_choice(data.get("status"), "status", STATUSES, errors),
        verdict=_choice(data.get("verdict"), "verdict", VERDICTS, errors),
        flag=_clean(data.get("flag"))[:100],
        review=_choice(data.get("review"), "review", REVIEW_STATES, errors),
        reviewer=_id(data.get("reviewer"), "reviewer", errors),
        score_min=_score(data.get("score_min"), "score_min", errors),
        score_max=_score(data.get("score_max"), "score_max", errors),
        q=_clean(data.get("q")),
    )
    if errors:
        raise ValidationError(errors)
    return filters


def clamp_limit(limit: Any) -> int:
    try:
        value = int(limit)
    except (TypeError, ValueError):
        return PAGE_SIZE
    return max(1, min(value, MAX_PAGE_SIZE))


def _search(qs: QuerySet[Completion], q: str) -> QuerySet[Completion]:
    if not q:
        return qs
    if connection.vendor == "postgresql":
        return qs.filter(RawSQL(FTS_MATCH_SQL, [q], output_field=BooleanField()))
    return qs.filter(text__icontains=q)


def _flag(qs: QuerySet[Completion], flag: str) -> QuerySet[Completion]:
    if not flag:
        return qs
    if connection.vendor == "postgresql":
        return qs.filter(verdict__flags__contains=[flag])
    # SQLite has no JSON containment; every failed filter also has an entry in `reasons`.
    return qs.filter(verdict__reasons__has_key=flag, verdict__flags__icontains=f'"{flag}"')


_REVIEW_Q = {
    "approved": Q(review_item__state=ItemState.DONE, review_item__decision=FinalDecision.APPROVE),
    "edited": Q(
        review_item__state=ItemState.DONE,
        review_item__decision=FinalDecision.APPROVE,
        review_item__target_text__isnull=False,
    ),
    "rejected": Q(review_item__state=ItemState.DONE, review_item__decision=FinalDecision.REJECT),
    "adjudication": Q(review_item__state=ItemState.ADJUDICATION),
    "pending": Q(review_item__state__in=[ItemState.OPEN, ItemState.LEASED]),
    "excluded": Q(review_item__state=ItemState.EXCLUDED),
    "none": Q(review_item__isnull=True),
}


def completions_queryset(*, project: Project, filters: CompletionFilters) -> QuerySet[Completion]:
    """The project's completions that match `filters` (unordered)."""
    job_ids = list(GenerationJob.objects.filter(project=project).values_list("pk", flat=True))
    if filters.job is not None:
        job_ids = [j for j in job_ids if j == filters.job]
    qs = Completion.objects.filter(job_id__in=job_ids)
    if filters.prompt_set is not None:
        qs = qs.filter(prompt__prompt_set_id=filters.prompt_set)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.verdict == "none":
        qs = qs.filter(verdict__isnull=True)
    elif filters.verdict:
        qs = qs.filter(verdict__project=project, verdict__state=filters.verdict)
    qs = _flag(qs, filters.flag)
    if filters.score_min is not None:
        qs = qs.filter(verdict__project=project, verdict__judge_score__gte=filters.score_min)
    if filters.score_max is not None:
        qs = qs.filter(verdict__project=project, verdict__judge_score__lte=filters.score_max)
    if filters.review:
        qs = qs.filter(_REVIEW_Q[filters.review])
    if filters.reviewer is not None:
        qs = qs.filter(
            Exists(
                Review.objects.filter(
                    project=project, reviewer_id=filters.reviewer, completion_id=OuterRef("pk")
                )
            )
        )
    return _search(qs, filters.q)


LIST_FIELDS = (
    "id",
    "job_id",
    "prompt_id",
    "prompt__prompt_set_id",
    "sample_index",
    "status",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "cost_usd",
    "created_at",
    "verdict__state",
    "verdict__flags",
    "verdict__judge_score",
    "review_item__state",
    "review_item__decision",
    "edited",
    "preview",
    "prompt_preview",
)


@dataclass(frozen=True)
class CompletionPage:
    items: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None


def completions_page(
    *,
    project: Project,
    filters: CompletionFilters,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> CompletionPage:
    """One keyset page, newest first. Raises InvalidCursor for a forged cursor."""
    before = decode_cursor(cursor)
    limit = clamp_limit(limit)
    qs = completions_queryset(project=project, filters=filters)
    if before is not None:
        qs = qs.filter(id__lt=before)
    rows = list(
        qs.annotate(
            preview=Left("text", PREVIEW_CHARS),
            prompt_preview=Left("prompt__text", 200),
            edited=Q(review_item__target_text__isnull=False),
        )
        .order_by("-id")
        .values(*LIST_FIELDS)[: limit + 1]
    )
    items = [
        {
            "id": r["id"],
            "job_id": r["job_id"],
            "prompt_id": r["prompt_id"],
            "prompt_set_id": r["prompt__prompt_set_id"],
            "sample_index": r["sample_index"],
            "status": r["status"],
            "finish_reason": r["finish_reason"],
            "prompt_tokens": r["prompt_tokens"],
            "completion_tokens": r["completion_tokens"],
            "latency_ms": r["latency_ms"],
            "cost_usd": str(r["cost_usd"]),
            "created_at": r["created_at"],
            "verdict": r["verdict__state"],
            "flags": list(r["verdict__flags"] or []),
            "judge_score": r["verdict__judge_score"],
            "review_state": r["review_item__state"],
            "decision": r["review_item__decision"],
            "edited": bool(r["edited"]),
            "text_preview": r["preview"] or "",
            "prompt_preview": r["prompt_preview"] or "",
        }
        for r in rows[:limit]
    ]
    next_cursor = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    return CompletionPage(items=items, next_cursor=next_cursor)


def topk_summary(blob: bytes | memoryview | None) -> dict[str, Any] | None:
    """What a stored DTK1 record holds: tokens, K, how many tokens have top-k entries, the mean
    log-prob of the generated tokens, and whether it has token ids (usable for logit KD)."""
    if blob is None:
        return None
    raw = bytes(blob)
    try:
        record = topk_format.decode(raw)
    except (topk_format.TopkFormatError, ValueError) as exc:
        return {"bytes": len(raw), "error": str(exc)}
    with_topk = (
        int(np.isfinite(record.topk_logprobs.astype(np.float32)).any(axis=1).sum())
        if record.k
        else 0
    )
    return {
        "bytes": len(raw),
        "tokens": record.num_tokens,
        "k": record.k,
        "tokens_with_topk": with_topk,
        "mean_logprob": topk_format.mean_logprob(record),
        "token_ids": record.strings is None,
    }


def completion_detail(*, completion: Completion) -> dict[str, Any]:
    """One completion with its prompt, sibling samples (same job and prompt), filter verdict,
    review state, reviews and edits, usage, and a summary of its top-k."""
    prompt = completion.prompt
    verdict = CompletionVerdict.objects.filter(completion=completion).first()
    from distillapp.review.models import ReviewItem

    item = (
        ReviewItem.objects.filter(completion=completion)
        .select_related("adjudicated_by", "bulk_action")
        .first()
    )
    reviews = list(
        Review.objects.filter(completion=completion)
        .select_related("reviewer")
        .order_by("created_at", "id")
    )
    siblings = list(
        Completion.objects.filter(job_id=completion.job_id, prompt_id=completion.prompt_id)
        .exclude(pk=completion.pk)
        .annotate(preview=Left("text", PREVIEW_CHARS))
        .order_by("sample_index", "id")
        .values(
            "id",
            "sample_index",
            "status",
            "preview",
            "verdict__state",
            "verdict__judge_score",
            "review_item__decision",
        )[:50]
    )
    best = (
        BestPick.objects.filter(job_id=completion.job_id, prompt_id=completion.prompt_id)
        .values_list("completion_id", flat=True)
        .first()
    )
    prompt_set = PromptSet.objects.filter(pk=prompt.prompt_set_id).values("id", "name").first()
    return {
        "id": completion.pk,
        "project_id": completion.job.project_id,
        "job_id": completion.job_id,
        "teacher": (completion.job.teacher_snapshot or {}).get("name", ""),
        "sample_index": completion.sample_index,
        "status": completion.status,
        "text": completion.text,
        "error": completion.error,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_ms": completion.latency_ms,
        "cost_usd": str(completion.cost_usd),
        "attempts": completion.attempts,
        "created_at": completion.created_at,
        "best_pick": best == completion.pk,
        "prompt": {
            "id": prompt.pk,
            "prompt_set_id": prompt.prompt_set_id,
            "prompt_set": prompt_set["name"] if prompt_set else "",
            "split": prompt.split,
            "messages": chat_messages(prompt.messages, prompt.text),
            "reference": prompt.reference,
        },
        "siblings": [
            {
                "id": s["id"],
                "sample_index": s["sample_index"],
                "status": s["status"],
                "text_preview": s["preview"] or "",
                "verdict": s["verdict__state"],
                "judge_score": s["verdict__judge_score"],
                "decision": s["review_item__decision"],
                "best_pick": s["id"] == best,
            }
            for s in siblings
        ],
        "verdict": (
            {
                "state": verdict.state,
                "flags": list(verdict.flags or []),
                "reasons": {str(k): str(v) for k, v in (verdict.reasons or {}).items()},
                "judge_score": verdict.judge_score,
                "judge_rationale": verdict.judge_rationale,
                "judge_error": verdict.judge_error,
                "duplicate_of": verdict.duplicate_of_id,
            }
            if verdict
            else None
        ),
        "review": (
            {
                "state": item.state,
                "decision": item.decision,
                "target_text": item.target_text,
                "reviews_count": item.reviews_count,
                "decided_at": item.decided_at,
                "adjudicated_by": item.adjudicated_by.username if item.adjudicated_by else None,
                "bulk": item.bulk_action_id is not None,
            }
            if item
            else None
        ),
        "reviews": [
            {
                "reviewer": r.reviewer.username,
                "decision": r.decision,
                "reason": r.reason,
                "edited_text": r.edited_text,
                "original_text": r.original_text,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
            }
            for r in reviews
        ],
        "topk": topk_summary(completion.topk),
    }


def completion_filter_choices(*, project: Project) -> dict[str, Any]:
    """Options of the browser's filter form: jobs, prompt sets, reviewers (members)."""
    from distillapp.accounts.models import Membership

    return {
        "jobs": list(
            GenerationJob.objects.filter(project=project)
            .order_by("-created_at")
            .values("id", "teacher_snapshot__name")[:200]
        ),
        "prompt_sets": list(
            PromptSet.objects.filter(project=project).order_by("name").values("id", "name")[:200]
        ),
        "reviewers": list(
            Membership.objects.filter(org_id=project.org_id)
            .order_by("user__username")
            .values("user_id", "user__username")[:500]
        ),
        "statuses": STATUSES,
        "verdicts": VERDICTS,
        "reviews": REVIEW_STATES,
    }
