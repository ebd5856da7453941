"""Reads of the evaluation app: eval sets, keyset pages of items, the reference queue."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from distillapp.core.cursor import decode_cursor, encode_cursor
from distillapp.evaluation.models import (
    EvalAnswer,
    EvalItem,
    EvalJudgement,
    EvalRun,
    EvalSet,
    EvalSetKind,
)
from distillapp.projects.models import Project

PAGE_SIZE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class ItemPage:
    items: list[EvalItem]
    next_cursor: str | None


def eval_sets_for_project(*, project: Project) -> QuerySet[EvalSet]:
    return (
        EvalSet.objects.filter(project=project)
        .select_related("created_by")
        .annotate(
            verified_count=Count("items", filter=Q(items__reference_verified_at__isnull=False))
        )
        .order_by("-created_at", "-id")
    )


def eval_set_items(
    *, eval_set: EvalSet, cursor: str | None = None, limit: int = PAGE_SIZE
) -> ItemPage:
    """One keyset page (id order) of a set's items. Raises InvalidCursor for a forged cursor."""
    after = decode_cursor(cursor)
    limit = max(1, min(int(limit), MAX_PAGE))
    qs = EvalItem.objects.filter(eval_set=eval_set).select_related("reference_verified_by")
    if after is not None:
        qs = qs.filter(id__gt=after)
    items = list(qs.order_by("id")[: limit + 1])
    next_cursor = encode_cursor(items[limit - 1].pk) if len(items) > limit else None
    return ItemPage(items=items[:limit], next_cursor=next_cursor)


def reference_queue(*, project: Project, limit: int = PAGE_SIZE) -> list[EvalItem]:
    """Held-out items whose reference no human has approved yet (with or without one), oldest
    set first."""
    return list(
        EvalItem.objects.filter(
            project=project,
            eval_set__kind=EvalSetKind.HELDOUT,
            reference_verified_at__isnull=True,
        )
        .select_related("eval_set")
        .order_by("eval_set_id", "id")[:limit]
    )


def reference_queue_count(*, project: Project) -> int:
    return EvalItem.objects.filter(
        project=project, eval_set__kind=EvalSetKind.HELDOUT, reference_verified_at__isnull=True
    ).count()


# --- eval runs -------------------------------------------------------------------------------

OUTCOMES = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass(frozen=True)
class Sample:
    item: EvalItem
    answers: dict[str, EvalAnswer]
    judgements: dict[str, EvalJudgement]
    contaminated: bool
    ngrams: list[str]


@dataclass(frozen=True)
class SamplePage:
    samples: list[Sample]
    next_cursor: str | None


def eval_runs_for_project(*, project: Project) -> QuerySet[EvalRun]:
    return EvalRun.objects.filter(project=project).select_related("created_by")


def eval_run_contaminated(*, run: EvalRun) -> dict[str, list[str]]:
    """Contaminated item id (as text) → overlapping 13-grams, once the run is scored."""
    return dict(((run.results or {}).get("contamination") or {}).get("item_ngrams") or {})


def eval_run_categories(*, run: EvalRun) -> list[str]:
    return sorted(
        set(
            EvalItem.objects.filter(eval_set__in=run.eval_sets.all())
            .exclude(category="")
            .values_list("category", flat=True)
        )
    )


def eval_run_samples(
    *,
    run: EvalRun,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
    category: str = "",
    contaminated: str = "",
    outcome: str = "",
    model_key: str = "",
) -> SamplePage:
    """One keyset page (item id order) of the run's items with every model's answer and
    judgement. Filters: category; contaminated "yes"/"no"; `outcome` win/loss/tie of
    `model_key` against the baseline. Raises InvalidCursor for a forged cursor."""
    after = decode_cursor(cursor)
    limit = max(1, min(int(limit), MAX_PAGE))
    flagged = eval_run_contaminated(run=run)
    qs = EvalItem.objects.filter(eval_set__in=run.eval_sets.all()).select_related("eval_set")
    if after is not None:
        qs = qs.filter(id__gt=after)
    if category:
        qs = qs.filter(category=category)
    ids = [int(k) for k in flagged]
    if contaminated == "yes":
        qs = qs.filter(id__in=ids)
    elif contaminated == "no":
        qs = qs.exclude(id__in=ids)
    if outcome in OUTCOMES:
        key = model_key or next(
            (s["key"] for s in run.model_specs if s["key"] != run.baseline_key), ""
        )
        qs = qs.filter(
            id__in=EvalJudgement.objects.filter(
                run=run, model_key=key, outcome=OUTCOMES[outcome]
            ).values("item_id")
        )
    items = list(qs.order_by("id")[: limit + 1])
    next_cursor = encode_cursor(items[limit - 1].pk) if len(items) > limit else None
    items = items[:limit]
    answers: dict[int, dict[str, EvalAnswer]] = {}
    for a in EvalAnswer.objects.filter(run=run, item__in=items):
        answers.setdefault(a.item_id, {})[a.model_key] = a
    judgements: dict[int, dict[str, EvalJudgement]] = {}
    for j in EvalJudgement.objects.filter(run=run, item__in=items):
        judgements.setdefault(j.item_id, {})[j.model_key] = j
    return SamplePage(
        samples=[
            Sample(
                item=i,
                answers=answers.get(i.pk, {}),
                judgements=judgements.get(i.pk, {}),
                contaminated=str(i.pk) in flagged,
                ngrams=flagged.get(str(i.pk), []),
            )
            for i in items
        ],
        next_cursor=next_cursor,
    )
