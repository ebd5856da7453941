"""Claims: lease the next item to a reviewer, renew a held lease, return expired ones.

Every change to an item's reviews or leases happens while its `ReviewItem` row is locked, so "never
more than k active leases + reviews" is checked under the lock. Claims lock candidates with SKIP
LOCKED on PostgreSQL, so concurrent reviewers pass each other by instead of queueing on one row;
nothing else is shared between claims (no counter or queue row), so reviewers do not serialise.
On SQLite the writer lock serialises everything.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from distillapp.filters.models import CompletionVerdict
from distillapp.generation.models import Completion, GenerationJob
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt
from distillapp.review.conf import ReviewSettings, review_settings
from distillapp.review.models import ItemState, Review, ReviewItem, ReviewLease
from distillapp.review.services._sql import (
    execute,
    fetch_joined,
    fetchone,
    for_update,
    is_postgres,
    literal,
    placeholders,
    table,
    unchanged_since_snapshot,
)
from distillapp.review.services.state import item_settle, recount
from distillapp.review.services.sync import REVIEWABLE_VERDICT_STATES


def lease_until(cfg: ReviewSettings, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=cfg.lease_seconds)


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
    reviewers (reviews + active leases).

    On PostgreSQL a claim is one statement (find the held lease or lock a candidate, lease it,
    mark it, read its completion), so one round trip and no transaction to open and close."""
    cfg = review_settings(project)
    exclude = [int(i) for i in exclude_ids if i]
    _maybe_release_expired(project, reviewer, cfg)
    released = False
    for _attempt in range(20):
        if is_postgres():
            found = _claim_in_one_statement(project, reviewer, cfg, exclude, prefer_id)
        else:
            with transaction.atomic():
                found = _claim_in_steps(project, reviewer, cfg, exclude, prefer_id)
        if found is None:
            if released:
                return None
            # Expired leases are returned every few seconds; before saying "empty", do it now.
            _maybe_release_expired(project, reviewer, cfg, force=True)
            released = True
            continue
        (outcome, item_id, completion_id, settled), loaded = found
        if outcome == _FULL:
            # Stale OPEN (e.g. overlap lowered): fix it and look further.
            with transaction.atomic():
                if fetchone(
                    f"SELECT id FROM {table(ReviewItem)} WHERE id = %s{for_update()}", [item_id]
                ):
                    item_settle(
                        item_id=item_id,
                        completion_id=completion_id,
                        settled=settled,
                        cfg=cfg,
                        writer=reviewer.pk,
                    )
            continue
        if outcome == _CHANGED:
            continue  # changed after this statement began: look again with a fresh snapshot
        completion, job, prompt = loaded
        assert isinstance(completion, Completion) and isinstance(job, GenerationJob)
        job.project = project  # the caller's instance: no join, no settings JSON to parse
        completion.job = job
        completion.prompt = prompt  # type: ignore[assignment]
        return completion
    return None


_HELD, _LEASED, _FULL, _CHANGED = "held", "leased", "full", "changed"
_Found = tuple[tuple[str, int, int, bool], list[Model]]


def _held_and_candidate(
    project: Project, reviewer: Any, cfg: ReviewSettings, exclude: list[int], prefer_id: int | None
) -> tuple[str, list[Any]]:
    """CTEs `held`: the reviewer's oldest active lease on an open item (`prefer_id`'s when held);
    `candidate`: when none is held, the first open, reviewable item they have not seen, locked,
    skipping rows others hold, with its active lease count and whether it is unchanged since the
    statement's snapshot.

    Hand-written so the planner sees few tables, not the ORM's seven-way join: planning time was
    most of a claim at 1M rows. The partial index (project, priority, id) WHERE state = 'open'
    serves the ORDER BY … LIMIT 1."""
    now = timezone.now()
    order = "r.priority, r.id" if cfg.order == "uncertain" else "r.id"
    held_exclude = f"AND l.completion_id NOT IN ({placeholders(exclude)})" if exclude else ""
    cand_exclude = f"AND r.completion_id NOT IN ({placeholders(exclude)})" if exclude else ""
    reviewable = ", ".join(literal(s) for s in REVIEWABLE_VERDICT_STATES)
    sql = (
        "held AS ("
        f"SELECT l.id, l.completion_id FROM {table(ReviewLease)} l "
        f"INNER JOIN {table(ReviewItem)} i ON i.completion_id = l.completion_id "
        "WHERE l.project_id = %s AND l.reviewer_id = %s AND l.expires_at > %s "
        f"AND i.state IN ({literal(ItemState.OPEN)}, {literal(ItemState.LEASED)}) {held_exclude} "
        "ORDER BY CASE WHEN l.completion_id = %s THEN 0 ELSE 1 END, l.created_at, l.id LIMIT 1"
        "), candidate AS ("
        "SELECT r.id, r.completion_id, r.reviews_count, r.adjudicated_by_id, r.bulk_action_id, "
        f"{unchanged_since_snapshot(table(ReviewItem), 'r')} AS fresh, "
        f"(SELECT COUNT(*) FROM {table(ReviewLease)} a "
        "WHERE a.completion_id = r.completion_id AND a.expires_at > %s) AS active "
        f"FROM {table(ReviewItem)} r "
        f"LEFT JOIN {table(CompletionVerdict)} v ON v.completion_id = r.completion_id "
        "WHERE NOT EXISTS (SELECT 1 FROM held) "
        f"AND r.project_id = %s AND r.state = {literal(ItemState.OPEN)} "
        f"AND (v.id IS NULL OR v.state IN ({reviewable})) "
        f"AND NOT EXISTS (SELECT 1 FROM {table(Review)} rv "
        "WHERE rv.completion_id = r.completion_id AND rv.reviewer_id = %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {table(ReviewLease)} l "
        "WHERE l.completion_id = r.completion_id AND l.reviewer_id = %s) "
        f"{cand_exclude} ORDER BY {order} LIMIT 1{for_update(of='r', skip_locked=True)})"
    )
    params = [
        project.pk,
        reviewer.pk,
        now,
        *exclude,
        prefer_id or 0,
        now,
        project.pk,
        reviewer.pk,
        reviewer.pk,
        *exclude,
    ]
    return sql, params


def _fetch_found(head: str, params: list[Any], *, prepared: bool = False) -> _Found | None:
    """Run `head` (CTEs ending in `found`) and read the found row's completion, job and prompt."""
    row = fetch_joined(
        [(Completion, "c"), (GenerationJob, "j"), (Prompt, "p")],
        f"FROM found f INNER JOIN {table(Completion)} c ON c.id = f.completion_id "
        f"INNER JOIN {table(GenerationJob)} j ON j.id = c.job_id "
        f"INNER JOIN {table(Prompt)} p ON p.id = c.prompt_id",
        params,
        head=head,
        extra=["f.outcome", "f.id", "f.completion_id", "f.settled"],
        prepared=prepared,
    )
    if row is None:
        return None
    (outcome, item_id, completion_id, settled), loaded = row
    return (str(outcome), int(item_id), int(completion_id), bool(settled)), loaded


# A lease is not worth a wait for the WAL to reach the disk (behind whatever else the server is
# writing): if the server crashes right after a claim, the lease is lost, the item goes back to
# the queue and the reviewer's decision is refused as for an expired lease. Decisions keep
# synchronous commits. Only when the claim is its own transaction.
_ASYNC_COMMIT = ", (SELECT set_config('synchronous_commit', 'off', true)) async_commit"


def _claim_in_one_statement(
    project: Project, reviewer: Any, cfg: ReviewSettings, exclude: list[int], prefer_id: int | None
) -> _Found | None:
    """PostgreSQL: renew the held lease, or lease the candidate when it has a free slot and is
    unchanged since the snapshot (so its lease count is current), all in one statement. Marks the
    item leased when this lease takes its last slot, and updates its row in any case so later
    statements can tell it changed."""
    now = timezone.now()
    until = lease_until(cfg, now)
    held_and_candidate, params = _held_and_candidate(project, reviewer, cfg, exclude, prefer_id)
    items, leases = table(ReviewItem), table(ReviewLease)
    k = int(cfg.overlap)
    leased = literal(ItemState.LEASED)
    head = (
        f"WITH {held_and_candidate}, "
        f"granted AS (SELECT id, completion_id, reviews_count + active + 1 >= {k} AS full "
        f"FROM candidate WHERE fresh AND reviews_count + active < {k}), "
        f"new_lease AS (INSERT INTO {leases} "
        "(completion_id, project_id, reviewer_id, expires_at, created_at) "
        "SELECT completion_id, %s, %s, %s, %s FROM granted "
        "ON CONFLICT (completion_id, reviewer_id) DO UPDATE SET expires_at = EXCLUDED.expires_at), "
        f"marked AS (UPDATE {items} t SET "
        f"state = CASE WHEN g.full THEN {leased} ELSE t.state END, "
        "lease_expires_at = CASE WHEN g.full THEN %s ELSE t.lease_expires_at END "
        "FROM granted g WHERE t.id = g.id), "
        f"renewed AS (UPDATE {leases} t SET expires_at = %s FROM held h WHERE t.id = h.id), "
        f"renewed_item AS (UPDATE {items} t SET lease_expires_at = %s FROM held h "
        f"WHERE t.completion_id = h.completion_id AND t.state = {leased} "
        "AND t.lease_expires_at < %s), "
        "found AS (SELECT x.* FROM ("
        f"SELECT {literal(_HELD)} AS outcome, id, completion_id, FALSE AS settled FROM held "
        f"UNION ALL SELECT CASE WHEN NOT fresh THEN {literal(_CHANGED)} "
        f"WHEN reviews_count + active < {k} THEN {literal(_LEASED)} ELSE {literal(_FULL)} END, "
        "id, completion_id, adjudicated_by_id IS NOT NULL OR bulk_action_id IS NOT NULL "
        f"FROM candidate) x{_ASYNC_COMMIT if not connection.in_atomic_block else ''})"
    )
    params += [project.pk, reviewer.pk, until, now, until, until, until, until]
    return _fetch_found(head, params, prepared=True)


def _claim_in_steps(
    project: Project, reviewer: Any, cfg: ReviewSettings, exclude: list[int], prefer_id: int | None
) -> _Found | None:
    """SQLite (no writes inside WITH): find, then renew or lease, inside the caller's transaction,
    which holds the database's writer lock throughout."""
    held_and_candidate, params = _held_and_candidate(project, reviewer, cfg, exclude, prefer_id)
    found = _fetch_found(
        f"WITH {held_and_candidate}, found AS ("
        f"SELECT {literal(_HELD)} AS outcome, id, completion_id, 0 AS settled FROM held "
        "UNION ALL SELECT CASE WHEN reviews_count + active < %s "
        f"THEN {literal(_LEASED)} ELSE {literal(_FULL)} END, id, completion_id, "
        "adjudicated_by_id IS NOT NULL OR bulk_action_id IS NOT NULL FROM candidate)",
        [*params, cfg.overlap],
    )
    if found is None:
        return None
    (outcome, row_id, completion_id, _settled), _loaded = found
    now = timezone.now()
    until = lease_until(cfg, now)
    if outcome == _HELD:
        execute(f"UPDATE {table(ReviewLease)} SET expires_at = %s WHERE id = %s", [until, row_id])
        execute(
            f"UPDATE {table(ReviewItem)} SET lease_expires_at = %s "
            "WHERE completion_id = %s AND state = %s AND lease_expires_at < %s",
            [until, completion_id, ItemState.LEASED, until],
        )
    elif outcome == _LEASED:
        execute(
            f"INSERT INTO {table(ReviewLease)} "
            "(completion_id, project_id, reviewer_id, expires_at, created_at) "
            "VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (completion_id, reviewer_id) DO UPDATE SET expires_at = excluded.expires_at",
            [completion_id, project.pk, reviewer.pk, until, now],
        )
        # Read after the insert, so the count includes the new lease.
        execute(
            f"UPDATE {table(ReviewItem)} SET state = %s, lease_expires_at = %s WHERE id = %s "
            f"AND reviews_count + (SELECT COUNT(*) FROM {table(ReviewLease)} "
            "WHERE completion_id = %s AND expires_at > %s) >= %s",
            [ItemState.LEASED, until, row_id, completion_id, now, cfg.overlap],
        )
    return found


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
        recount(item, cfg, writer=reviewer.pk)


_last_release: dict[int, float] = {}
RELEASE_EVERY_SECONDS = 2.0


def _maybe_release_expired(
    project: Project, reviewer: Any, cfg: ReviewSettings, force: bool = False
) -> None:
    now = time.monotonic()
    if force or now - _last_release.get(project.pk, 0.0) >= RELEASE_EVERY_SECONDS:
        _last_release[project.pk] = now
        with transaction.atomic():
            _release_expired(project, reviewer, cfg)


def review_release(*, completion: Completion, reviewer: Any) -> None:
    """Give a leased item back to the queue (idempotent)."""
    cfg = review_settings(completion.job.project)
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().filter(completion=completion).first()
        deleted, _ = ReviewLease.objects.filter(completion=completion, reviewer=reviewer).delete()
        if item is not None and deleted:
            recount(item, cfg, writer=reviewer.pk)
