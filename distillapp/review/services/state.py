"""An item's queue state from its reviews and active leases: the one rule every write path applies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.utils import timezone

from distillapp.review.conf import ReviewSettings
from distillapp.review.models import (
    Decision,
    FinalDecision,
    ItemState,
    Review,
    ReviewItem,
    ReviewLease,
)
from distillapp.review.services._sql import execute, fetchall, fetchone, table
from distillapp.review.services.tally import tally_add, transition

ACCEPT = {Decision.APPROVE, Decision.EDIT}


def facts_sql(*, completion_id: int, now: datetime) -> tuple[str, list[Any]]:
    """Every review of the completion and its active leases, as rows of (kind: 0 review | 1
    lease, id, reviewer_id, decision, edited_text, at: updated_at | expires_at). Order them by
    kind, at, id: reviews oldest change first (the last edit wins). Read under the item's row
    lock, and current only if nothing changed them after the statement's snapshot."""
    return (
        "SELECT 0 AS kind, id, reviewer_id, decision, edited_text, updated_at AS at "
        f"FROM {table(Review)} WHERE completion_id = %s "
        "UNION ALL SELECT 1, id, reviewer_id, NULL, NULL, expires_at "
        f"FROM {table(ReviewLease)} WHERE completion_id = %s AND expires_at > %s",
        [completion_id, completion_id, now],
    )


def item_facts(*, completion_id: int, now: datetime) -> list[tuple[Any, ...]]:
    """`facts_sql`, read in a statement of its own after the one that took the item's lock."""
    sql, params = facts_sql(completion_id=completion_id, now=now)
    return fetchall(f"SELECT * FROM ({sql}) f ORDER BY kind, at, id", params)


def is_settled(adjudicated_by_id: Any, bulk_action_id: Any, state: str) -> bool:
    """An admin decided the item (adjudication, bulk action) or a filter took it out: reviews then
    only update its count (see `settle`)."""
    return bool(adjudicated_by_id or bulk_action_id or state == ItemState.EXCLUDED)


def settle(
    *,
    reviews: Sequence[tuple[str, str | None]],
    expiries: Sequence[Any],
    settled: bool,
    cfg: ReviewSettings,
    now: datetime,
) -> dict[str, Any]:
    """The item's columns given its non-skip reviews (decision, edited text; oldest change first)
    and the expiry of each active lease (kept as read: a datetime, or SQLite's text).

    `settled`: an admin decided it (adjudication, bulk action) or a filter took it out; reviews
    then only update the count."""
    values: dict[str, Any] = {"reviews_count": len(reviews)}
    if settled:
        return values
    if len(reviews) >= cfg.overlap:
        accepts = {decision in ACCEPT for decision, _t in reviews}
        if len(accepts) == 1:
            approve = accepts.pop()
            edits = [text for decision, text in reviews if decision == Decision.EDIT]
            values.update(
                state=ItemState.DONE,
                decision=FinalDecision.APPROVE if approve else FinalDecision.REJECT,
                target_text=edits[-1] if edits and approve else None,
                decided_at=now,
            )
        else:
            values.update(
                state=ItemState.ADJUDICATION, decision=None, target_text=None, decided_at=None
            )
        return values
    values.update(decision=None, target_text=None, decided_at=None)
    if len(reviews) + len(expiries) >= cfg.overlap:
        values.update(state=ItemState.LEASED, lease_expires_at=max(expiries))
    else:
        values.update(state=ItemState.OPEN, lease_expires_at=None)
    return values


def item_update(item_id: int, values: dict[str, Any]) -> tuple[str, list[Any]]:
    columns = ", ".join(f"{name} = %s" for name in values)
    return f"UPDATE {table(ReviewItem)} SET {columns} WHERE id = %s", [*values.values(), item_id]


def item_settle(
    *, item_id: int, completion_id: int, settled: bool, cfg: ReviewSettings, writer: int
) -> None:
    """Recompute an item's state from its reviews and leases, write it and record the change of
    the project's counts as `writer`'s. The caller holds the item's row lock, so they cannot change
    underneath."""
    now = timezone.now()
    row = fetchone(
        f"SELECT project_id, state, decision FROM {table(ReviewItem)} WHERE id = %s", [item_id]
    )
    facts = item_facts(completion_id=completion_id, now=now)
    values = settle(
        reviews=[(f[3], f[4]) for f in facts if f[0] == 0 and f[3] != Decision.SKIP],
        expiries=[f[5] for f in facts if f[0] == 1],
        settled=settled,
        cfg=cfg,
        now=now,
    )
    execute(*item_update(item_id, values))
    if row is not None:
        project_id, state, decision = row
        new_state = values.get("state", state)
        delta = transition(state, decision, new_state, values.get("decision", decision))
        tally_add(project_id=project_id, writer=writer, delta=delta)


def recount(item: ReviewItem, cfg: ReviewSettings, *, writer: int) -> None:
    """`item_settle` for an item loaded (and locked) through the ORM."""
    item_settle(
        item_id=item.pk,
        completion_id=item.completion_id,
        settled=is_settled(item.adjudicated_by_id, item.bulk_action_id, item.state),
        cfg=cfg,
        writer=writer,
    )
