"""Writes of the review queue: sync, claim, decide, undo, adjudicate, best pick, bulk actions, settings.

Concurrency: every change to an item's reviews or leases happens while its `ReviewItem` row is locked
(`select_for_update`), so "never more than k active leases + reviews" is checked under the lock.
Claims lock candidates with SKIP LOCKED on PostgreSQL, so concurrent reviewers pass each other by
instead of queueing on the same row. On SQLite the writer lock serialises everything.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Max, Min, Q
from django.utils import timezone

from distillapp.generation.models import Completion, CompletionStatus, GenerationJob
from distillapp.projects.models import Project
from distillapp.review.conf import MAX_OVERLAP, MAX_REASONS, ORDERS, ReviewSettings, review_settings
from distillapp.review.models import (
    BestPick,
    BulkAction,
    Decision,
    FinalDecision,
    ItemState,
    Review,
    ReviewAction,
    ReviewItem,
    ReviewLease,
    ReviewQueueState,
)

REVIEWABLE_VERDICT_STATES = ("passed", "restored")
ACCEPT = {Decision.APPROVE, Decision.EDIT}
_BATCH = 5000


def reviewable_q(prefix: str = "completion__") -> Q:
    """Completions without a verdict, or whose verdict passed or was restored by a human."""
    return Q(**{f"{prefix}verdict__isnull": True}) | Q(
        **{f"{prefix}verdict__state__in": REVIEWABLE_VERDICT_STATES}
    )


# --- sync --------------------------------------------------------------------------------------


def _uncertainty(
    row: Mapping[str, Any], siblings: Sequence[Mapping[str, Any]], threshold: float
) -> float:
    """Higher means a human's look is worth more: judge near its threshold, flags, sample disagreement,
    low teacher log-prob."""
    u = 0.0
    score = row["judge_score"]
    if score is not None:
        u += max(0.0, 3.0 - abs(float(score) - threshold))
    u += min(len(row["flags"] or []), 3)
    scores = [s["judge_score"] for s in siblings if s["judge_score"] is not None]
    if len(scores) >= 2:
        u += min((max(scores) - min(scores)) / 3.0, 2.0)
    if len({s["verdict_state"] for s in siblings}) > 1:
        u += 1.0
    lp = row["mean_logprob"]
    if lp is not None:
        u += min(max(-float(lp), 0.0), 3.0) / 1.5
    return round(u, 4)


SYNC_INLINE_LIMIT = 50_000  # above this many items, priorities are refreshed only on demand


def review_queue_sync(*, project: Project, force: bool = False) -> int:
    """Queue every OK completion of the project and refresh states and priorities from the filter
    verdicts. Idempotent; throttled to once per REVIEW_SYNC_SECONDS unless `force`. Returns the number
    of items added.

    Unforced syncs (page loads, API claims) of big projects only add new items; the priority refresh
    reads every item, so it runs when forced: by the filters pipeline after a run, or an admin's
    "Refresh the queue" button. A claim checks verdicts itself, so a stale state never hands out a
    filtered completion."""
    now = timezone.now()
    qstate, _ = ReviewQueueState.objects.get_or_create(project=project)
    if not force:
        fresh = qstate.synced_at and now - qstate.synced_at < timedelta(
            seconds=django_settings.REVIEW_SYNC_SECONDS
        )
        # Conditional update: only one of several concurrent page loads does the work.
        if fresh or not ReviewQueueState.objects.filter(
            pk=qstate.pk, synced_at=qstate.synced_at
        ).update(synced_at=now):
            return 0
    else:
        ReviewQueueState.objects.filter(pk=qstate.pk).update(synced_at=now)

    added = _insert_missing_items(project)
    if added > 10_000 and connection.vendor == "postgresql":
        with (
            connection.cursor() as cursor
        ):  # fresh statistics, or the planner takes a big table for empty
            cursor.execute(f"ANALYZE {ReviewItem._meta.db_table}")
    if (
        force
        or ReviewItem.objects.filter(project=project)[:SYNC_INLINE_LIMIT].count()
        < SYNC_INLINE_LIMIT
    ):
        _refresh_priorities(project)
    return added


def _insert_missing_items(project: Project) -> int:
    """INSERT … SELECT every OK completion that has no item yet, in id ranges of _INSERT_RANGE so
    each statement's deferred foreign-key checks stay small (one 1M-row statement was ~40× slower)."""
    item = ReviewItem._meta.db_table
    completion = Completion._meta.db_table
    job = GenerationJob._meta.db_table
    bounds = Completion.objects.filter(job__project=project, status=CompletionStatus.OK).aggregate(
        lo=Min("id"), hi=Max("id")
    )
    if bounds["lo"] is None:
        return 0
    sql = (
        f"INSERT INTO {item} (completion_id, project_id, job_id, prompt_id, state, priority, reviews_count, created_at) "
        f"SELECT c.id, j.project_id, c.job_id, c.prompt_id, %s, 0, 0, %s FROM {completion} c "
        f"INNER JOIN {job} j ON j.id = c.job_id "
        f"WHERE j.project_id = %s AND c.status = %s AND c.id >= %s AND c.id < %s "
        f"AND NOT EXISTS (SELECT 1 FROM {item} r WHERE r.completion_id = c.id) "
        f"ON CONFLICT (completion_id) DO NOTHING"
    )
    added = 0
    now = timezone.now()
    for lo in range(bounds["lo"], bounds["hi"] + 1, _INSERT_RANGE):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                sql, [ItemState.OPEN, now, project.pk, CompletionStatus.OK, lo, lo + _INSERT_RANGE]
            )
            added += max(cursor.rowcount, 0)
    return added


_INSERT_RANGE = 20_000


def _write_priorities(changed: list[tuple[int, float, str]]) -> None:
    if not changed:
        return
    if connection.vendor != "postgresql":
        ReviewItem.objects.bulk_update(
            [ReviewItem(pk=pk, priority=p, state=st) for pk, p, st in changed],
            ["state", "priority"],
            batch_size=500,
        )
        return
    # UPDATE … FROM (VALUES …): one statement per batch instead of a CASE per row.
    table = ReviewItem._meta.db_table
    rows = ", ".join(["(%s::bigint, %s::double precision, %s::varchar)"] * len(changed))
    params = [x for row in changed for x in row]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS r SET priority = v.p, state = v.s FROM (VALUES {rows}) AS v(id, p, s) WHERE r.id = v.id",
            params,
        )


def _refresh_priorities(project: Project) -> None:
    threshold = review_settings(project).judge_threshold
    rows = (
        ReviewItem.objects.filter(project=project)
        .order_by("job_id", "prompt_id", "id")
        .values(
            "id",
            "state",
            "priority",
            "job_id",
            "prompt_id",
            mean_logprob=F("completion__mean_logprob"),
            verdict_state=F("completion__verdict__state"),
            judge_score=F("completion__verdict__judge_score"),
            flags=F("completion__verdict__flags"),
        )
    )
    changed: list[tuple[int, float, str]] = []
    for _key, group_iter in itertools.groupby(
        rows.iterator(chunk_size=_BATCH), key=lambda r: (r["job_id"], r["prompt_id"])
    ):
        group = list(group_iter)
        for row in group:
            priority = -_uncertainty(row, group, threshold)
            reviewable = (
                row["verdict_state"] is None or row["verdict_state"] in REVIEWABLE_VERDICT_STATES
            )
            state = row["state"]
            if state == ItemState.OPEN and not reviewable:
                state = ItemState.EXCLUDED
            elif state == ItemState.EXCLUDED and reviewable:
                state = ItemState.OPEN
            if state != row["state"] or priority != row["priority"]:
                changed.append((row["id"], priority, state))
        if len(changed) >= _BATCH:
            _write_priorities(changed)
            changed = []
    _write_priorities(changed)


def _chunks(it: Iterable[Any], size: int) -> Iterable[list[Any]]:
    iterator = iter(it)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# --- claim -------------------------------------------------------------------------------------


def _lease_until(cfg: ReviewSettings) -> Any:
    return timezone.now() + timedelta(seconds=cfg.lease_seconds)


def _recount(item: ReviewItem, cfg: ReviewSettings) -> None:
    """Recompute an item's state from its reviews and active leases. The caller holds its row lock."""
    now = timezone.now()
    reviews = list(
        Review.objects.filter(completion_id=item.completion_id)
        .exclude(decision=Decision.SKIP)
        .order_by("updated_at", "id")
    )
    item.reviews_count = len(reviews)
    active = ReviewLease.objects.filter(completion_id=item.completion_id, expires_at__gt=now)
    if item.adjudicated_by_id or item.bulk_action_id or item.state == ItemState.EXCLUDED:
        pass  # an admin settled it, or a filter took it out; reviews no longer move it
    elif item.reviews_count >= cfg.overlap:
        accepts = {r.decision in ACCEPT for r in reviews}
        if len(accepts) == 1:
            item.state = ItemState.DONE
            item.decision = FinalDecision.APPROVE if accepts.pop() else FinalDecision.REJECT
            edits = [r for r in reviews if r.decision == Decision.EDIT]
            item.target_text = (
                edits[-1].edited_text if edits and item.decision == FinalDecision.APPROVE else None
            )
            item.decided_at = now
        else:
            item.state, item.decision, item.target_text, item.decided_at = (
                ItemState.ADJUDICATION,
                None,
                None,
                None,
            )
    else:
        item.decision, item.target_text, item.decided_at = None, None, None
        if item.reviews_count + active.count() >= cfg.overlap:
            item.state = ItemState.LEASED
            item.lease_expires_at = active.aggregate(m=Max("expires_at"))["m"]
        else:
            item.state = ItemState.OPEN
            item.lease_expires_at = None
    item.save(
        update_fields=[
            "reviews_count",
            "state",
            "decision",
            "target_text",
            "decided_at",
            "lease_expires_at",
        ]
    )


def _release_expired(project: Project, reviewer: Any, cfg: ReviewSettings) -> None:
    """Return items whose leases all expired to the queue. Cheap: a partial index on leased items."""
    now = timezone.now()
    ReviewLease.objects.filter(project=project, reviewer=reviewer, expires_at__lte=now).delete()
    expired = list(
        ReviewItem.objects.filter(
            project=project, state=ItemState.LEASED, lease_expires_at__lte=now
        )
        .select_for_update(skip_locked=True)
        .order_by("lease_expires_at")[:50]
    )
    for item in expired:
        ReviewLease.objects.filter(completion_id=item.completion_id, expires_at__lte=now).delete()
        _recount(item, cfg)


def _held_lease(
    project: Project, reviewer: Any, exclude_ids: Iterable[int], prefer_id: int | None = None
) -> ReviewLease | None:
    qs = (
        ReviewLease.objects.filter(
            project=project,
            reviewer=reviewer,
            expires_at__gt=timezone.now(),
            completion__review_item__state__in=[ItemState.OPEN, ItemState.LEASED],
        )
        .exclude(completion_id__in=list(exclude_ids))
        .order_by("created_at", "id")
    )
    if prefer_id:
        preferred = qs.filter(completion_id=prefer_id).first()
        if preferred is not None:
            return preferred
    return qs.first()


def review_claim_next(
    *,
    project: Project,
    reviewer: Any,
    exclude_ids: Iterable[int] = (),
    prefer_id: int | None = None,
) -> Completion | None:
    """Lease the next item to `reviewer` and return its completion, or None when none is left.

    A lease the reviewer already holds is returned first (a reload or a prefetch does not take a
    second item). Never hands an item to the same reviewer twice, nor to more than `overlap`
    reviewers (reviews + active leases)."""
    cfg = review_settings(project)
    exclude_ids = [int(i) for i in exclude_ids if i]
    with transaction.atomic():
        held = _held_lease(project, reviewer, exclude_ids, prefer_id)
        if held is not None:
            until = _lease_until(cfg)
            ReviewLease.objects.filter(pk=held.pk).update(expires_at=until)
            ReviewItem.objects.filter(
                completion_id=held.completion_id, state=ItemState.LEASED, lease_expires_at__lt=until
            ).update(lease_expires_at=until)
            return Completion.objects.select_related("job", "prompt").get(pk=held.completion_id)

        _maybe_release_expired(project, reviewer, cfg)
        released = False
        for _attempt in range(20):
            item = _next_candidate(project, reviewer, cfg, exclude_ids)
            if item is None:
                if released:
                    return None
                # Expired leases are returned every few seconds; before saying "empty", do it now.
                _maybe_release_expired(project, reviewer, cfg, force=True)
                released = True
                continue
            now = timezone.now()
            active = ReviewLease.objects.filter(
                completion_id=item.completion_id, expires_at__gt=now
            ).count()
            if item.reviews_count + active >= cfg.overlap:
                _recount(item, cfg)  # stale OPEN (e.g. overlap lowered): fix it and look further
                continue
            until = _lease_until(cfg)
            ReviewLease.objects.bulk_create(
                [
                    ReviewLease(
                        completion_id=item.completion_id,
                        reviewer=reviewer,
                        project=project,
                        expires_at=until,
                    )
                ],
                update_conflicts=True,
                unique_fields=["completion", "reviewer"],
                update_fields=["expires_at"],
            )
            if item.reviews_count + active + 1 >= cfg.overlap:
                ReviewItem.objects.filter(pk=item.pk).update(
                    state=ItemState.LEASED, lease_expires_at=until
                )
            return Completion.objects.select_related("job__project", "prompt").get(
                pk=item.completion_id
            )
    return None


def _next_candidate(
    project: Project, reviewer: Any, cfg: ReviewSettings, exclude_ids: list[int]
) -> ReviewItem | None:
    """Lock the first open, reviewable item this reviewer has not seen, skipping rows others hold.

    Hand-written so the planner sees four tables, not the ORM's seven-way join: planning time was
    most of a claim at 1M rows. The partial index (project, priority, id) WHERE state = 'open'
    serves the ORDER BY … LIMIT 1."""
    from distillapp.filters.models import CompletionVerdict

    order = "r.priority, r.id" if cfg.order == "uncertain" else "r.id"
    params: list[Any] = [
        project.pk,
        ItemState.OPEN,
        *REVIEWABLE_VERDICT_STATES,
        reviewer.pk,
        reviewer.pk,
    ]
    exclude_sql = ""
    if exclude_ids:
        exclude_sql = f"AND r.completion_id NOT IN ({', '.join(['%s'] * len(exclude_ids))})"
        params.extend(exclude_ids)
    lock = (
        " FOR UPDATE OF r SKIP LOCKED"
        if connection.features.has_select_for_update_skip_locked
        else ""
    )
    sql = (
        f"SELECT r.* FROM {ReviewItem._meta.db_table} r "
        f"LEFT JOIN {CompletionVerdict._meta.db_table} v ON v.completion_id = r.completion_id "
        f"WHERE r.project_id = %s AND r.state = %s AND (v.id IS NULL OR v.state IN (%s, %s)) "
        f"AND NOT EXISTS (SELECT 1 FROM {Review._meta.db_table} rv WHERE rv.completion_id = r.completion_id AND rv.reviewer_id = %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {ReviewLease._meta.db_table} l WHERE l.completion_id = r.completion_id AND l.reviewer_id = %s) "
        f"{exclude_sql} ORDER BY {order} LIMIT 1{lock}"
    )
    found = list(ReviewItem.objects.raw(sql, params))
    return found[0] if found else None


_last_release: dict[int, float] = {}
RELEASE_EVERY_SECONDS = 2.0


def _maybe_release_expired(
    project: Project, reviewer: Any, cfg: ReviewSettings, force: bool = False
) -> None:
    now = time.monotonic()
    if force or now - _last_release.get(project.pk, 0.0) >= RELEASE_EVERY_SECONDS:
        _last_release[project.pk] = now
        _release_expired(project, reviewer, cfg)


def review_release(*, completion: Completion, reviewer: Any) -> None:
    """Give a leased item back to the queue (idempotent)."""
    cfg = review_settings(completion.job.project)
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().filter(completion=completion).first()
        deleted, _ = ReviewLease.objects.filter(completion=completion, reviewer=reviewer).delete()
        if item is not None and deleted:
            _recount(item, cfg)


# --- decide / undo -----------------------------------------------------------------------------


def _snapshot(review: Review | None) -> dict[str, Any] | None:
    if review is None:
        return None
    return {
        "decision": review.decision,
        "reason": review.reason,
        "edited_text": review.edited_text,
        "duration_ms": review.duration_ms,
    }


def _clean_decision(
    cfg: ReviewSettings, decision: str, reason: str | None, edited_text: str | None
) -> tuple[str, str, str | None]:
    if decision not in Decision.values:
        raise ValidationError({"decision": f"Choose one of {', '.join(Decision.values)}."})
    reason = (reason or "").strip()
    if decision == Decision.REJECT:
        if reason not in cfg.reasons:
            raise ValidationError({"reason": "Pick a reject reason from the project's list."})
    else:
        reason = ""
    if decision == Decision.EDIT:
        if not (edited_text or "").strip():
            raise ValidationError({"edited_text": "An edit needs the corrected text."})
    else:
        edited_text = None
    return decision, reason, edited_text


def review_decide(
    *,
    completion: Completion,
    reviewer: Any,
    decision: str,
    reason: str | None = None,
    edited_text: str | None = None,
    duration_ms: int | None = None,
) -> Review:
    """Record `reviewer`'s decision. Idempotent: a repeated submit updates the one Review row.

    Needs an active lease or an earlier review by the same reviewer. The completion's text is never
    changed; an edit lives on the Review and becomes the training target."""
    project = completion.job.project
    cfg = review_settings(project)
    decision, reason, edited_text = _clean_decision(cfg, decision, reason, edited_text)
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().filter(completion=completion).first()
        if item is None:
            raise ValidationError("This completion is not in the review queue.")
        now = timezone.now()
        existing = Review.objects.filter(completion=completion, reviewer=reviewer).first()
        lease = ReviewLease.objects.filter(
            completion=completion, reviewer=reviewer, expires_at__gt=now
        ).first()
        if existing is None and lease is None:
            raise ValidationError(
                "Your lease on this item expired and it went back to the queue. Load the next one."
            )
        new = {"decision": decision, "reason": reason, "edited_text": edited_text}
        if existing is not None and all(getattr(existing, k) == v for k, v in new.items()):
            if lease is not None:
                lease.delete()
                _recount(item, cfg)
            return existing  # the same submit again: nothing changes, nothing to log
        previous = _snapshot(existing)
        if existing is None:
            review = Review.objects.create(
                completion=completion,
                project=project,
                reviewer=reviewer,
                original_text=completion.text,
                duration_ms=duration_ms,
                **new,
            )
        else:
            review = existing
            for k, v in new.items():
                setattr(review, k, v)
            if duration_ms is not None:
                review.duration_ms = duration_ms
            review.save()
        ReviewAction.objects.create(
            project=project, reviewer=reviewer, completion=completion, previous=previous
        )
        if lease is not None:
            lease.delete()
        _recount(item, cfg)
    return review


def review_undo(*, project: Project, reviewer: Any) -> Completion | None:
    """Revert the reviewer's last decision in the project and lease the item back to them.

    Returns the completion to show again, or None when another reviewer holds the free slot now.
    Raises ValidationError when there is nothing to undo."""
    cfg = review_settings(project)
    with transaction.atomic():
        action = (
            ReviewAction.objects.select_for_update()
            .filter(project=project, reviewer=reviewer, undone_at__isnull=True)
            .order_by("-id")
            .first()
        )
        if action is None:
            raise ValidationError("Nothing to undo.")
        item = (
            ReviewItem.objects.select_for_update()
            .filter(completion_id=action.completion_id)
            .first()
        )
        if item is not None and (item.adjudicated_by_id or item.bulk_action_id):
            action.undone_at = timezone.now()
            action.save(update_fields=["undone_at"])
            raise ValidationError(
                "An admin has settled this item since; it can no longer be undone."
            )
        if action.previous is None:
            Review.objects.filter(completion_id=action.completion_id, reviewer=reviewer).delete()
        else:
            Review.objects.filter(completion_id=action.completion_id, reviewer=reviewer).update(
                updated_at=timezone.now(), **action.previous
            )
        action.undone_at = timezone.now()
        action.save(update_fields=["undone_at"])
        leased = False
        if item is not None:
            now = timezone.now()
            others = (
                ReviewLease.objects.filter(completion_id=item.completion_id, expires_at__gt=now)
                .exclude(reviewer=reviewer)
                .count()
            )
            reviews = Review.objects.filter(completion_id=item.completion_id).exclude(
                decision=Decision.SKIP
            )
            mine = reviews.filter(reviewer=reviewer).exists()
            if reviews.count() - int(mine) + others < cfg.overlap:
                ReviewLease.objects.update_or_create(
                    completion_id=item.completion_id,
                    reviewer=reviewer,
                    defaults={"expires_at": _lease_until(cfg), "project": project},
                )
                leased = True
            _recount(item, cfg)
    if not leased:
        return None
    return Completion.objects.select_related("job", "prompt").get(pk=action.completion_id)


# --- admins ------------------------------------------------------------------------------------


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
        item.state = ItemState.DONE
        item.decision = decision
        item.target_text = edited_text if decision == FinalDecision.APPROVE else None
        item.adjudicated_by = admin
        item.decided_at = timezone.now()
        item.save(
            update_fields=["state", "decision", "target_text", "adjudicated_by", "decided_at"]
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
        ids = [pk for pk, _s, _c in rows]
        now = timezone.now()
        for chunk in _chunks(ids, _BATCH):
            ReviewItem.objects.filter(pk__in=chunk).update(
                state=ItemState.DONE,
                decision=decision,
                target_text=None,
                bulk_action=action,
                decided_at=now,
                lease_expires_at=None,
            )
        for chunk in _chunks([c for _p, _s, c in rows], _BATCH):
            ReviewLease.objects.filter(completion_id__in=chunk).delete()
    return action


def review_bulk_undo(*, bulk_action: BulkAction) -> int:
    """Undo a whole bulk action: its items go back to the queue. Idempotent."""
    cfg = review_settings(bulk_action.project)
    with transaction.atomic():
        action = BulkAction.objects.select_for_update().get(pk=bulk_action.pk)
        if action.undone_at is not None:
            return 0
        ids = [pk for pk, _state in action.items]
        restored = 0
        for chunk in _chunks(ids, _BATCH):
            items = ReviewItem.objects.select_for_update().filter(pk__in=chunk, bulk_action=action)
            restored += items.filter(reviews_count=0).update(
                state=ItemState.OPEN,
                decision=None,
                target_text=None,
                bulk_action=None,
                decided_at=None,
            )
            for item in items.filter(reviews_count__gt=0):
                item.bulk_action = None
                item.state = ItemState.OPEN
                item.save(update_fields=["bulk_action", "state"])
                _recount(item, cfg)
                restored += 1
        action.undone_at = timezone.now()
        action.save(update_fields=["undone_at"])
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
            for item in touched.select_for_update().iterator(chunk_size=_BATCH):
                _recount(item, cfg)
    return review_settings(project)
