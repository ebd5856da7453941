"""Decisions and undo."""

from __future__ import annotations

import functools
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Field, Min, Model
from django.utils import timezone

from distillapp.generation.models import Completion
from distillapp.projects.models import Project
from distillapp.review.conf import ReviewSettings, review_settings
from distillapp.review.models import (
    Decision,
    ItemState,
    Review,
    ReviewAction,
    ReviewItem,
    ReviewLease,
)
from distillapp.review.services._sql import (
    execute,
    fetchall,
    fetchone,
    is_postgres,
    literal,
    table,
)
from distillapp.review.services.claim import lease_until
from distillapp.review.services.state import (
    facts_sql,
    is_settled,
    item_update,
    recount,
    settle,
)
from distillapp.review.services.tally import tally_step, transition


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
    changed; an edit lives on the Review and becomes the training target.

    On PostgreSQL this is two statements and no transaction to open: read the item, its reviews
    and leases; then write the item's new state only if its row is still the version read (every
    change to an item's reviews or leases also updates its row), and the review, the undo entry
    and the lease's removal only if that write happened. If the row moved in between, read again;
    after a few misses, take its lock. The usual case, a first decision on a leased item nobody
    else holds or reviewed, is a single statement."""
    project = completion.job.project
    cfg = review_settings(project)
    decision, reason, edited_text = _clean_decision(cfg, decision, reason, edited_text)
    new = {"decision": decision, "reason": reason, "edited_text": edited_text}
    postgres = is_postgres()
    if postgres and (
        review := _first_decision(completion, project, reviewer, cfg, new, duration_ms)
    ):
        return review
    for attempt in range(_OPTIMISTIC_TRIES + 1):
        locked = not postgres or attempt == _OPTIMISTIC_TRIES
        with transaction.atomic() if locked else nullcontext():
            if locked and postgres:
                fetchall(
                    f"SELECT id FROM {table(ReviewItem)} WHERE completion_id = %s FOR UPDATE",
                    [completion.pk],
                )
            review = _decide_once(completion, project, reviewer, cfg, new, duration_ms)
        if review is not None:
            return review
    raise RuntimeError("unreachable: the locked attempt cannot miss")


_OPTIMISTIC_TRIES = 3


def _new_review(
    completion: Completion,
    project: Project,
    reviewer: Any,
    new: dict[str, Any],
    duration_ms: int | None,
    now: Any,
) -> Review:
    """An unsaved first Review of `completion` by `reviewer`; the original text is kept beside
    any edit."""
    return Review(
        completion=completion,
        project=project,
        reviewer=reviewer,
        original_text=completion.text,
        duration_ms=duration_ms,
        created_at=now,
        updated_at=now,
        **new,
    )


def _first_decision(
    completion: Completion,
    project: Project,
    reviewer: Any,
    cfg: ReviewSettings,
    new: dict[str, Any],
    duration_ms: int | None,
) -> Review | None:
    """PostgreSQL, one statement: the reviewer's first decision on an item they hold the only
    active lease of, that nobody else reviewed and no admin settled. Its new state follows from
    this decision alone, so it is computed beforehand, and the statement writes only if all of
    that holds and the item's row is the version the statement's snapshot saw. None otherwise:
    the general path then reads first."""
    now = timezone.now()
    values = settle(
        reviews=[(new["decision"], new["edited_text"])] if new["decision"] != Decision.SKIP else [],
        expiries=[],
        settled=False,
        cfg=cfg,
        now=now,
    )
    items, leases, reviews = table(ReviewItem), table(ReviewLease), table(Review)
    columns = ", ".join(f"{name} = %s" for name in values)
    item_cte = (
        f"UPDATE {items} t SET {columns} WHERE t.completion_id = %s "
        "AND t.adjudicated_by_id IS NULL AND t.bulk_action_id IS NULL "
        f"AND t.state IN ({literal(ItemState.OPEN)}, {literal(ItemState.LEASED)}) "
        f"AND t.xmin = (SELECT s.xmin FROM {items} s WHERE s.completion_id = %s) "
        f"AND EXISTS (SELECT 1 FROM {leases} l WHERE l.completion_id = %s "
        "AND l.reviewer_id = %s AND l.expires_at > %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {leases} l WHERE l.completion_id = %s "
        "AND l.reviewer_id <> %s AND l.expires_at > %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {reviews} r WHERE r.completion_id = %s "
        f"AND (r.reviewer_id = %s OR r.decision <> {literal(Decision.SKIP)})) RETURNING t.id",
        [
            *values.values(),
            *[completion.pk] * 3,
            reviewer.pk,
            now,
            completion.pk,
            reviewer.pk,
            now,
            completion.pk,
            reviewer.pk,
        ],
    )
    review = _new_review(completion, project, reviewer, new, duration_ms, now)
    lease = (
        f"DELETE FROM {leases} WHERE completion_id = %s AND reviewer_id = %s {{and_source}}",
        [completion.pk, reviewer.pk],
    )
    # The item was open or leased (the statement checks), so the change to the counts is known.
    tally = tally_step(
        project_id=project.pk,
        writer=reviewer.pk,
        delta=transition(ItemState.OPEN, None, values["state"], values["decision"]),
    )
    written = _write(None, None, values, review, None, lease, tally=tally, item_cte=item_cte)
    return review if written else None


def _decide_once(
    completion: Completion,
    project: Project,
    reviewer: Any,
    cfg: ReviewSettings,
    new: dict[str, Any],
    duration_ms: int | None,
) -> Review | None:
    """One read and one write; None when the item's row changed in between."""
    now = timezone.now()
    facts_query, facts_params = facts_sql(completion_id=completion.pk, now=now)
    version = "it.xmin::text" if is_postgres() else "NULL"
    rows = fetchall(
        f"SELECT it.id, it.state, it.adjudicated_by_id, it.bulk_action_id, {version}, "
        "it.decision, f.* "
        f"FROM {table(ReviewItem)} it LEFT JOIN ({facts_query}) f ON 1 = 1 "
        "WHERE it.completion_id = %s ORDER BY f.kind, f.at, f.id",
        [*facts_params, completion.pk],
        prepared=True,
    )
    if not rows:
        raise ValidationError("This completion is not in the review queue.")
    item_id, state, adjudicated_by_id, bulk_action_id, row_version, final = rows[0][:6]
    settled = is_settled(adjudicated_by_id, bulk_action_id, state)
    facts = [row[6:] for row in rows if row[6] is not None]
    mine = [f for f in facts if f[2] == reviewer.pk]
    review_id = next((f[1] for f in mine if f[0] == 0), None)
    lease_id = next((f[1] for f in mine if f[0] == 1), None)
    if review_id is None and lease_id is None:
        raise ValidationError(
            "Your lease on this item expired and it went back to the queue. Load the next one."
        )
    existing = Review.objects.get(pk=review_id) if review_id is not None else None
    others = [f for f in facts if f[2] != reviewer.pk]
    reviews = [(f[3], f[4]) for f in others if f[0] == 0 and f[3] != Decision.SKIP]
    unchanged = existing is not None and all(getattr(existing, k) == v for k, v in new.items())
    if unchanged:
        if lease_id is None:
            return existing  # the same submit again: nothing changes, nothing to log
        # Only the lease goes; the review keeps its place among the others.
        reviews = [(f[3], f[4]) for f in facts if f[0] == 0 and f[3] != Decision.SKIP]
    elif new["decision"] != Decision.SKIP:
        # The latest change goes last: the last edit wins.
        reviews.append((new["decision"], new["edited_text"]))
    values = settle(
        reviews=reviews,
        expiries=[f[5] for f in others if f[0] == 1],
        settled=settled,
        cfg=cfg,
        now=now,
    )
    # The row is written only if it is still the version read, so `state` and `final` are what
    # the write changes.
    tally = tally_step(
        project_id=project.pk,
        writer=reviewer.pk,
        delta=transition(state, final, values.get("state", state), values.get("decision", final)),
    )
    review: Review | None = existing
    if unchanged:
        written = _write(item_id, row_version, values, None, None, lease_id, tally=tally)
    elif existing is None:
        review = _new_review(completion, project, reviewer, new, duration_ms, now)
        written = _write(item_id, row_version, values, review, None, lease_id, tally=tally)
    else:
        previous = _snapshot(existing)
        for k, v in new.items():
            setattr(existing, k, v)
        if duration_ms is not None:
            existing.duration_ms = duration_ms
        existing.updated_at = now
        written = _write(item_id, row_version, values, existing, previous, lease_id, tally=tally)
    return review if written else None


def _write(
    item_id: int | None,
    row_version: str | None,
    values: dict[str, Any],
    review: Review | None,
    previous: dict[str, Any] | None,
    lease: int | tuple[str, list[Any]] | None,
    *,
    tally: tuple[str, list[Any]] | None = None,
    item_cte: tuple[str, list[Any]] | None = None,
) -> bool:
    """Write the item's new state and, with it, the review (inserted when it has no id yet), its
    undo entry and the lease's removal. On PostgreSQL one statement, and nothing at all unless the
    item's row is still `row_version`. `tally` records the change of the project's counts.
    Returns whether it wrote."""
    steps: list[tuple[str, str, list[Any]]] = []  # (name, SQL reading `source`, params)
    if review is not None:
        if review.pk is None:
            steps.append(
                (
                    "review_w",
                    f"INSERT INTO {table(Review)} (completion_id, project_id, reviewer_id, "
                    "decision, reason, edited_text, original_text, duration_ms, created_at, "
                    f"updated_at) SELECT {_typed(Review, _REVIEW_COLUMNS)} {{source}} "
                    "RETURNING id",
                    [
                        review.completion_id,
                        review.project_id,
                        review.reviewer_id,
                        review.decision,
                        review.reason,
                        review.edited_text,
                        review.original_text,
                        review.duration_ms,
                        review.created_at,
                        review.updated_at,
                    ],
                )
            )
        else:
            steps.append(
                (
                    "review_w",
                    f"UPDATE {table(Review)} SET decision = %s, reason = %s, edited_text = %s, "
                    "duration_ms = %s, updated_at = %s WHERE id = %s {and_source} RETURNING id",
                    [
                        review.decision,
                        review.reason,
                        review.edited_text,
                        review.duration_ms,
                        review.updated_at,
                        review.pk,
                    ],
                )
            )
        steps.append(
            (
                "action_w",
                f"INSERT INTO {table(ReviewAction)} "
                "(project_id, reviewer_id, completion_id, previous, created_at, undone_at) "
                f"SELECT {_typed(ReviewAction, _ACTION_COLUMNS)}, NULL {{source}}",
                [
                    review.project_id,
                    review.reviewer_id,
                    review.completion_id,
                    ReviewAction._meta.get_field("previous").get_db_prep_save(previous, connection),
                    review.updated_at,
                ],
            )
        )
    if isinstance(lease, tuple):
        steps.append(("lease_w", *lease))
    elif lease is not None:
        steps.append(
            ("lease_w", f"DELETE FROM {table(ReviewLease)} WHERE id = %s {{and_source}}", [lease])
        )
    if tally is not None:
        steps.append(("tally_w", *tally))
    if not is_postgres():
        # SQLite: inside the caller's transaction, which holds the writer lock.
        assert item_id is not None
        execute(*item_update(item_id, values))
        for _name, sql, params in steps:
            sql = sql.format(source="", and_source="")
            if " RETURNING " not in sql:
                execute(sql, params)
            elif (row := fetchone(sql, params)) and review is not None and review.pk is None:
                _mark_saved(review, row[0])
        return True
    if item_cte is None:
        assert item_id is not None
        item_sql, item_params = item_update(item_id, values)
        item_cte = (f"{item_sql} AND xmin::text = %s RETURNING id", [*item_params, row_version])
    ctes = [f"item_w AS ({item_cte[0]})"]
    params = list(item_cte[1])
    for name, sql, step_params in steps:
        ctes.append(
            f"{name} AS ("
            + sql.format(source="FROM item_w", and_source="AND EXISTS (SELECT 1 FROM item_w)")
            + ")"
        )
        params.extend(step_params)
    review_id = "(SELECT id FROM review_w)" if review is not None else "NULL"
    row = fetchone(
        f"WITH {', '.join(ctes)} SELECT (SELECT COUNT(*) FROM item_w), {review_id}",
        params,
        prepared=True,
    )
    if not row or not row[0]:
        return False
    if review is not None and review.pk is None:
        _mark_saved(review, row[1])
    return True


_REVIEW_COLUMNS = (
    "completion",
    "project",
    "reviewer",
    "decision",
    "reason",
    "edited_text",
    "original_text",
    "duration_ms",
    "created_at",
    "updated_at",
)
_ACTION_COLUMNS = ("project", "reviewer", "completion", "previous", "created_at")


def _typed(model: type[Model], names: tuple[str, ...]) -> str:
    """Placeholders for an INSERT … SELECT: on PostgreSQL cast to the columns' types, as a
    parameter bound on the server has no type of its own in a select list."""
    return _placeholders(model, names, connection.vendor)


@functools.cache
def _placeholders(model: type[Model], names: tuple[str, ...], vendor: str) -> str:
    if vendor != "postgresql":
        return ", ".join(["%s"] * len(names))
    fields = [model._meta.get_field(name) for name in names]
    return ", ".join(
        f"CAST(%s AS {f.cast_db_type(connection)})"  # type: ignore[attr-defined]
        for f in fields
        if isinstance(f, Field)
    )


def _mark_saved(review: Review, pk: int) -> None:
    review.pk = pk
    review._state.adding = False  # built by hand: a later save() updates this row
    review._state.db = connection.alias


def review_undo(*, project: Project, reviewer: Any) -> Completion | None:
    """Revert the reviewer's last decision in the project and lease the item back to them.

    Returns the completion to show again, or None when another reviewer holds the free slot now.
    Raises ValidationError when there is nothing to undo, or when an admin has settled the item
    since (that decision is then marked undone, so the next undo reaches the one before it)."""
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
        settled = item is not None and bool(item.adjudicated_by_id or item.bulk_action_id)
        if settled:
            action.undone_at = timezone.now()
            action.save(update_fields=["undone_at"])
            leased = False
        else:
            leased = _revert(action, item, project=project, reviewer=reviewer, cfg=cfg)
    if settled:  # raised after the commit, which keeps the action marked undone
        raise ValidationError("An admin has settled this item since; it can no longer be undone.")
    if not leased:
        return None
    return Completion.objects.select_related("job", "prompt").get(pk=action.completion_id)


def _revert(
    action: ReviewAction,
    item: ReviewItem | None,
    *,
    project: Project,
    reviewer: Any,
    cfg: ReviewSettings,
) -> bool:
    """Undo one decision under the locks review_undo holds; True when the item is leased back."""
    if action.previous is None:
        Review.objects.filter(completion_id=action.completion_id, reviewer=reviewer).delete()
    else:
        Review.objects.filter(completion_id=action.completion_id, reviewer=reviewer).update(
            updated_at=timezone.now(), **action.previous
        )
    action.undone_at = timezone.now()
    action.save(update_fields=["undone_at"])
    if item is None:
        return False
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
    leased = False
    if reviews.count() - int(mine) + others < cfg.overlap:
        # A claim returns the reviewer's oldest held lease first (that is what makes a prefetched
        # item wait its turn), so the item comes back next: its lease is dated before the others.
        held = ReviewLease.objects.filter(project=project, reviewer=reviewer).aggregate(
            first=Min("created_at")
        )["first"]
        lease, _ = ReviewLease.objects.update_or_create(
            completion_id=item.completion_id,
            reviewer=reviewer,
            defaults={"expires_at": lease_until(cfg), "project": project},
        )
        # (an update: created_at is auto_now_add, which a create would overwrite)
        ReviewLease.objects.filter(pk=lease.pk).update(
            created_at=min(held or now, now) - timedelta(microseconds=1)
        )
        leased = True
    recount(item, cfg, writer=reviewer.pk)
    return leased
