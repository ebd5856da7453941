"""Admin writes of the review queue: adjudication, best-of-samples picks, bulk actions, settings."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from distillapp.accounts.services import audit_record
from distillapp.core.iterables import chunked
from distillapp.generation.models import Completion
from distillapp.projects.models import Project
from distillapp.review.conf import MAX_OVERLAP, MAX_REASONS, ORDERS, ReviewSettings, review_settings
from distillapp.review.models import (
    BestPick,
    BulkAction,
    FinalDecision,
    ItemState,
    ReviewItem,
    ReviewLease,
)
from distillapp.review.services.state import recount
from distillapp.review.services.sync import BATCH, reviewable_q
from distillapp.review.services.tally import SYSTEM, merge, tally_add, transition


def review_adjudicate(
    *, completion: Completion, admin: Any, decision: str, edited_text: str | None = None
) -> ReviewItem:
    """An admin settles an item reviewers disagreed on. Idempotent (a repeat overwrites)."""
    if decision not in FinalDecision.values:
        raise ValidationError({"decision": "Adjudicate with approve or reject."})
    edited_text = (edited_text or "").strip() or None
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().filter(completion=completion).first()
        if item is None or not (item.state == ItemState.ADJUDICATION or item.adjudicated_by_id):
            raise ValidationError("This item is not waiting for adjudication.")
        before = (item.state, item.decision)
        item.state = ItemState.DONE
        item.decision = decision
        item.target_text = edited_text if decision == FinalDecision.APPROVE else None
        item.adjudicated_by = admin
        item.decided_at = timezone.now()
        item.save(
            update_fields=["state", "decision", "target_text", "adjudicated_by", "decided_at"]
        )
        tally_add(
            project_id=item.project_id,
            writer=admin.pk,
            delta=transition(*before, ItemState.DONE, decision),
        )
    return item


def review_pick_best(*, completion: Completion, user: Any) -> BestPick:
    """Mark `completion` as the best sample of its prompt in its job (replaces an earlier pick)."""
    pick, _ = BestPick.objects.update_or_create(
        job_id=completion.job_id,
        prompt_id=completion.prompt_id,
        defaults={
            "completion": completion,
            "picked_by": user,
            "project_id": completion.job.project_id,
        },
    )
    return pick


def review_unpick_best(*, completion: Completion) -> None:
    BestPick.objects.filter(
        job_id=completion.job_id, prompt_id=completion.prompt_id, completion=completion
    ).delete()


def bulk_candidates(
    *,
    project: Project,
    min_judge: float | None = None,
    no_flags: bool = False,
    job_id: int | None = None,
) -> Any:
    """Open or leased, reviewable items matching the filter (what a bulk action would settle)."""
    qs = ReviewItem.objects.filter(
        project=project, state__in=[ItemState.OPEN, ItemState.LEASED]
    ).filter(reviewable_q())
    if min_judge is not None:
        qs = qs.filter(completion__verdict__judge_score__gte=min_judge)
    if no_flags:
        qs = qs.filter(Q(completion__verdict__isnull=True) | Q(completion__verdict__flags=[]))
    if job_id is not None:
        qs = qs.filter(job_id=job_id)
    return qs


def review_bulk_apply(
    *,
    project: Project,
    actor: Any,
    decision: str,
    reason: str = "",
    min_judge: float | None = None,
    no_flags: bool = False,
    job_id: int | None = None,
    expected_count: int | None = None,
) -> BulkAction:
    """Approve or reject every open item matching the filter, as one undoable action.

    `expected_count` is the count the admin confirmed; if the queue moved since, nothing happens."""
    if decision not in FinalDecision.values:
        raise ValidationError({"decision": "Bulk actions approve or reject."})
    cfg = review_settings(project)
    if decision == FinalDecision.REJECT and reason not in cfg.reasons:
        raise ValidationError({"reason": "Pick a reject reason from the project's list."})
    filters = {"min_judge": min_judge, "no_flags": no_flags, "job_id": job_id}
    with transaction.atomic():
        qs = bulk_candidates(project=project, min_judge=min_judge, no_flags=no_flags, job_id=job_id)
        rows = list(
            ReviewItem.objects.filter(pk__in=list(qs.values_list("pk", flat=True)))
            .select_for_update()
            .values_list("pk", "state", "completion_id")
        )
        if expected_count is not None and expected_count != len(rows):
            raise ValidationError(
                f"The queue changed: {len(rows)} items match now, not {expected_count}. Check and confirm again."
            )
        if not rows:
            raise ValidationError("No open items match this filter.")
        action = BulkAction.objects.create(
            project=project,
            actor=actor,
            decision=decision,
            reason=reason if decision == FinalDecision.REJECT else "",
            filters=filters,
            items=[[pk, state] for pk, state, _c in rows],
            count=len(rows),
        )
        audit_record(
            org=project.org,
            actor=actor,
            action="review.bulk_apply",
            target=project.name,
            details={"decision": decision, "count": len(rows), "bulk_action": action.pk},
        )
        ids = [pk for pk, _s, _c in rows]
        now = timezone.now()
        for chunk in chunked(ids, BATCH):
            ReviewItem.objects.filter(pk__in=chunk).update(
                state=ItemState.DONE,
                decision=decision,
                target_text=None,
                bulk_action=action,
                decided_at=now,
                lease_expires_at=None,
            )
        for chunk in chunked([c for _p, _s, c in rows], BATCH):
            ReviewLease.objects.filter(completion_id__in=chunk).delete()
        tally_add(
            project_id=project.pk,
            writer=actor.pk,
            delta=merge(
                *(transition(state, None, ItemState.DONE, decision) for _p, state, _c in rows)
            ),
        )
    return action


def review_bulk_undo(*, bulk_action: BulkAction) -> int:
    """Undo a whole bulk action: its items go back to the queue. Idempotent."""
    cfg = review_settings(bulk_action.project)
    with transaction.atomic():
        action = BulkAction.objects.select_for_update().get(pk=bulk_action.pk)
        if action.undone_at is not None:
            return 0
        ids = [pk for pk, _state in action.items]
        writer = action.actor_id or SYSTEM
        restored = 0
        for chunk in chunked(ids, BATCH):
            items = ReviewItem.objects.select_for_update().filter(pk__in=chunk, bulk_action=action)
            unreviewed = list(items.filter(reviews_count=0).values_list("pk", "state", "decision"))
            restored += ReviewItem.objects.filter(pk__in=[pk for pk, _s, _d in unreviewed]).update(
                state=ItemState.OPEN,
                decision=None,
                target_text=None,
                bulk_action=None,
                decided_at=None,
            )
            tally_add(
                project_id=action.project_id,
                writer=writer,
                delta=merge(*(transition(s, d, ItemState.OPEN, None) for _pk, s, d in unreviewed)),
            )
            for item in items.filter(reviews_count__gt=0):
                # No longer settled: its reviews decide its state again.
                item.bulk_action = None
                item.save(update_fields=["bulk_action"])
                recount(item, cfg, writer=writer)
                restored += 1
        action.undone_at = timezone.now()
        action.save(update_fields=["undone_at"])
        project = action.project
        audit_record(
            org=project.org,
            actor=None,  # the user of the current request (see audit_record)
            action="review.bulk_undo",
            target=project.name,
            details={"bulk_action": action.pk, "restored": restored},
        )
    bulk_action.undone_at = action.undone_at
    return restored


def review_settings_update(
    *, project: Project, reasons: list[str], overlap: int, lease_seconds: int, order: str
) -> ReviewSettings:
    errors: dict[str, str] = {}
    reasons = [r.strip() for r in reasons if r and r.strip()]
    if not reasons:
        errors["reasons"] = "Give at least one reject reason."
    elif len(reasons) > MAX_REASONS:
        errors["reasons"] = f"At most {MAX_REASONS} reasons (keys 1–9 pick them)."
    elif len({r.lower() for r in reasons}) != len(reasons):
        errors["reasons"] = "Reasons must differ."
    elif any(len(r) > 200 for r in reasons):
        errors["reasons"] = "Keep each reason under 200 characters."
    if not 1 <= overlap <= MAX_OVERLAP:
        errors["overlap"] = f"Overlap is between 1 and {MAX_OVERLAP} reviewers per item."
    if not 10 <= lease_seconds <= 7 * 86400:
        errors["lease_seconds"] = "A lease lasts between 10 seconds and 7 days."
    if order not in ORDERS:
        errors["order"] = "Order is uncertain or plain."
    if errors:
        raise ValidationError(errors)
    old = review_settings(project)
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project.pk)
        review = {
            "reasons": reasons,
            "overlap": overlap,
            "lease_seconds": lease_seconds,
            "order": order,
        }
        project.settings = {**(project.settings or {}), "review": review}
        project.save(update_fields=["settings"])
        if overlap != old.overlap:
            cfg = review_settings(project)
            touched = ReviewItem.objects.filter(
                project=project, adjudicated_by__isnull=True, bulk_action__isnull=True
            ).filter(Q(reviews_count__gt=0) | Q(state=ItemState.LEASED))
            for item in touched.select_for_update().iterator(chunk_size=BATCH):
                recount(item, cfg, writer=SYSTEM)
    return review_settings(project)
