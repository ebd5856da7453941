"""Reads of the review queue: progress, agreement, the item page's context, approved examples."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q

from distillapp.filters.selectors import filter_config_for_project
from distillapp.generation.models import Completion
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt, Split
from distillapp.prompts.selectors import ensure_trainable
from distillapp.review.agreement import cohen_kappa, fleiss_kappa
from distillapp.review.conf import review_settings
from distillapp.review.models import (
    BestPick,
    BulkAction,
    Decision,
    FinalDecision,
    ItemState,
    Review,
    ReviewAction,
    ReviewItem,
)
from distillapp.review.services import ACCEPT
from distillapp.review.services.tally import tally_read

ACTIVE_STATES = (ItemState.OPEN, ItemState.LEASED, ItemState.DONE, ItemState.ADJUDICATION)


def review_progress(*, project: Project, reviewer: Any = None) -> dict[str, Any]:
    """Done / remaining for the project, and for `reviewer` when given; exact after every write.
    The project's counts are summed from its few `ReviewTally` rows, not counted from its items."""
    counts = tally_read(project=project)
    done, remaining, adjudication = counts["done"], counts["active"], counts["adjudication"]
    out: dict[str, Any] = {
        "total": done + remaining + adjudication,
        "done": done,
        "remaining": remaining,
        "adjudication": adjudication,
        "excluded": counts["excluded"],
        "approved": counts["approved"],
    }
    if reviewer is not None:
        mine = Review.objects.filter(project=project, reviewer=reviewer)
        mine_done = mine.exclude(decision=Decision.SKIP).count()
        touched_open = mine.filter(
            completion__review_item__state__in=[ItemState.OPEN, ItemState.LEASED]
        ).count()
        out["mine"] = {"done": mine_done, "remaining": max(0, remaining - touched_open)}
    return out


def review_can_undo(*, project: Project, reviewer: Any) -> bool:
    """Whether `reviewer` has a decision in the project that undo would revert."""
    return ReviewAction.objects.filter(
        project=project, reviewer=reviewer, undone_at__isnull=True
    ).exists()


def reviewer_breakdown(*, project: Project) -> list[dict[str, Any]]:
    """Per reviewer: decisions by kind and time spent."""
    rows = (
        Review.objects.filter(project=project)
        .values("reviewer_id", "reviewer__username")
        .annotate(
            total=Count("id", filter=~Q(decision=Decision.SKIP)),
            approve=Count("id", filter=Q(decision=Decision.APPROVE)),
            reject=Count("id", filter=Q(decision=Decision.REJECT)),
            edit=Count("id", filter=Q(decision=Decision.EDIT)),
            skip=Count("id", filter=Q(decision=Decision.SKIP)),
        )
        .order_by("-total", "reviewer__username")
    )
    remaining = ReviewItem.objects.filter(
        project=project, state__in=[ItemState.OPEN, ItemState.LEASED]
    ).count()
    touched = dict(
        Review.objects.filter(
            project=project, completion__review_item__state__in=[ItemState.OPEN, ItemState.LEASED]
        )
        .values("reviewer_id")
        .annotate(n=Count("id"))
        .values_list("reviewer_id", "n")
    )
    return [
        {
            "username": r["reviewer__username"],
            "done": r["total"],
            "approve": r["approve"],
            "reject": r["reject"],
            "edit": r["edit"],
            "skip": r["skip"],
            "remaining": max(0, remaining - touched.get(r["reviewer_id"], 0)),
        }
        for r in rows
    ]


def review_agreement(*, project: Project) -> dict[str, Any]:
    """Agreement between reviewers on items with at least two (non-skip) reviews.

    Categories are accept (approve or edit) and reject, as for adjudication. Cohen's kappa when
    exactly two people rated those items, Fleiss' kappa (first n ratings of items with ≥ n, n the
    project's overlap, at least 2) otherwise."""
    cfg = review_settings(project)
    by_item: dict[int, list[tuple[int, str]]] = defaultdict(list)
    rows = (
        Review.objects.filter(project=project, completion__review_item__reviews_count__gte=2)
        .exclude(decision=Decision.SKIP)
        .order_by("completion_id", "created_at", "id")
        .values_list("completion_id", "reviewer_id", "decision")
    )
    for completion_id, reviewer_id, decision in rows.iterator():
        by_item[completion_id].append((reviewer_id, "accept" if decision in ACCEPT else "reject"))
    items = [v for v in by_item.values() if len(v) >= 2]
    raters = {r for v in items for r, _ in v}
    if not items:
        return {"method": None, "kappa": None, "items": 0, "raters": len(raters)}
    if len(raters) == 2:
        a, b = sorted(raters)
        pairs = []
        for v in items:
            ratings = dict(v)
            if a in ratings and b in ratings:
                pairs.append((ratings[a], ratings[b]))
        return {
            "method": "cohen",
            "kappa": _round(cohen_kappa(pairs)),
            "items": len(pairs),
            "raters": 2,
        }
    n = max(2, cfg.overlap)
    table = []
    for v in items:
        if len(v) >= n:
            cats = [c for _r, c in v[:n]]
            table.append([cats.count("accept"), cats.count("reject")])
    kappa = fleiss_kappa(table) if table else None
    return {"method": "fleiss", "kappa": _round(kappa), "items": len(table), "raters": len(raters)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


APPROVING = {Decision.APPROVE, Decision.EDIT}
REJECTING = {Decision.REJECT}


def judge_agreement(*, project: Project) -> dict[str, Any]:
    """How often the filters' LLM judge agrees with human reviews: {agree, total, rate}.

    A review agrees when the judge's score is at or above the project's threshold and the human
    approved (or edited, which keeps the completion), or the score is below and the human
    rejected. Skips are ignored; each review counts once; rate is None until a judged completion
    has a review. It lives here, not in filters, because it reads reviews: filters sit below
    review and never import it (the filters page loads it from `review_judge_agreement`)."""
    threshold = filter_config_for_project(project=project).judge_threshold
    rows = Review.objects.filter(
        project=project,
        completion__verdict__judge_score__isnull=False,
        decision__in=sorted(APPROVING | REJECTING),
    ).values_list("decision", "completion__verdict__judge_score")
    agree = total = 0
    for decision, score in rows.iterator():
        total += 1
        judge_keeps = score is not None and score >= threshold  # never None: filtered above
        if (judge_keeps and decision in APPROVING) or (not judge_keeps and decision in REJECTING):
            agree += 1
    return {"agree": agree, "total": total, "rate": round(agree / total, 4) if total else None}


def judge_agreement_or_none(*, project: Project) -> dict[str, Any] | None:
    """The judge–human agreement (`judge_agreement`); never None since it moved here from filters
    (the name stays for its callers)."""
    return judge_agreement(project=project)


def review_stats(*, project: Project, reviewer: Any = None) -> dict[str, Any]:
    return {
        "progress": review_progress(project=project, reviewer=reviewer),
        "reviewers": reviewer_breakdown(project=project),
        "agreement": review_agreement(project=project),
        "judge_agreement": judge_agreement_or_none(project=project),
    }


def completion_for_review(*, completion: Completion, reviewer: Any = None) -> dict[str, Any]:
    """Everything the review page shows about one completion."""
    verdict = getattr(completion, "verdict", None) if _has_verdict(completion) else None
    siblings = list(
        Completion.objects.filter(job_id=completion.job_id, prompt_id=completion.prompt_id)
        .exclude(pk=completion.pk)
        .select_related("verdict")
        .order_by("sample_index")
    )
    best = BestPick.objects.filter(job_id=completion.job_id, prompt_id=completion.prompt_id).first()
    mine = (
        Review.objects.filter(completion=completion, reviewer=reviewer).first()
        if reviewer is not None
        else None
    )
    snapshot = completion.job.teacher_snapshot or {}
    decoding = snapshot.get("decoding") if isinstance(snapshot.get("decoding"), dict) else None
    if decoding is None:
        decoding = {
            k: v
            for k, v in snapshot.items()
            if k not in {"name", "model", "kind", "base_url", "id"}
        }
    return {
        "completion": completion,
        "prompt": completion.prompt,
        "messages": completion.prompt.chat,
        "verdict": verdict,
        "reasons": sorted((verdict.reasons or {}).items()) if verdict is not None else [],
        "siblings": siblings,
        "best_id": best.completion_id if best else None,
        "teacher": {"name": snapshot.get("name", ""), "model": snapshot.get("model", "")},
        "decoding": sorted(decoding.items()),
        "my_review": mine,
    }


def _has_verdict(completion: Completion) -> bool:
    try:
        return completion.verdict is not None
    except Exception:  # RelatedObjectDoesNotExist
        return False


def adjudication_items(*, project: Project) -> Any:
    return (
        ReviewItem.objects.filter(project=project, state=ItemState.ADJUDICATION)
        .select_related("completion", "prompt")
        .order_by("id")
    )


def reviews_for_item(*, completion_id: int) -> list[Review]:
    return list(
        Review.objects.filter(completion_id=completion_id)
        .select_related("reviewer")
        .order_by("created_at")
    )


def review_history(
    *, project: Project, user: Any, is_admin: bool, reviewer_name: str = "", limit: int = 100
) -> Any:
    """Recent decisions: a reviewer sees only their own; admins see everyone's (optionally one)."""
    qs = (
        Review.objects.filter(project=project)
        .select_related("reviewer", "completion")
        .order_by("-updated_at", "-id")
    )
    if not is_admin:
        qs = qs.filter(reviewer=user)
    elif reviewer_name:
        qs = qs.filter(reviewer__username=reviewer_name)
    return qs[:limit]


def bulk_actions_recent(*, project: Project, limit: int = 10) -> list[BulkAction]:
    return list(
        BulkAction.objects.filter(project=project).select_related("actor").defer("items")[:limit]
    )


def project_reviewers(*, project: Project) -> list[Any]:
    user_model = get_user_model()
    return list(user_model.objects.filter(reviews__project=project).distinct().order_by("username"))


def approved_examples(*, project: Project) -> Iterator[tuple[Prompt, Completion, str, str]]:
    """(prompt, completion, target_text, source) for every approved train-split item.

    The target is the edited text when the item was edited, else the completion's text; source is
    "edited", "adjudicated", "bulk" or "review". When a sample was picked as best for its prompt in
    a job, only that sample counts for the prompt. Held-out prompts never appear."""
    best = {
        (j, p): c
        for j, p, c in BestPick.objects.filter(project=project).values_list(
            "job_id", "prompt_id", "completion_id"
        )
    }
    items = (
        ReviewItem.objects.filter(
            project=project, state=ItemState.DONE, decision=FinalDecision.APPROVE
        )
        .exclude(prompt__split=Split.HELDOUT)
        .select_related("completion", "prompt")
        .order_by("id")
    )
    batch: list[tuple[Prompt, Completion, str, str]] = []
    for item in items.iterator(chunk_size=2000):
        chosen = best.get((item.job_id, item.prompt_id))
        if chosen is not None and chosen != item.completion_id:
            continue
        if item.target_text is not None:
            target, source = item.target_text, "edited"
        else:
            target = item.completion.text
            source = (
                "adjudicated"
                if item.adjudicated_by_id
                else "bulk"
                if item.bulk_action_id
                else "review"
            )
        batch.append((item.prompt, item.completion, target, source))
        if len(batch) >= 2000:
            ensure_trainable(p.pk for p, *_ in batch)
            yield from batch
            batch = []
    if batch:
        ensure_trainable(p.pk for p, *_ in batch)
        yield from batch
