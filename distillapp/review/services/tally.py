"""Project-wide progress counts, kept exact as per-writer deltas (see `ReviewTally`).

Every write that changes an item's state, its final decision, or adds items records the change
here, in the same statement or transaction: `tally_step` for the decide statement, `tally_add`
elsewhere. Claims and expired leases only move items between open and leased, one bucket, so
they write nothing here."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Count, Sum

from distillapp.projects.models import Project
from distillapp.review.models import FinalDecision, ItemState, ReviewItem, ReviewTally
from distillapp.review.services._sql import execute, is_postgres, table

BUCKETS = ("active", "done", "adjudication", "excluded", "approved")
SYSTEM = 0  # the writer of queue syncs and settings changes

_BUCKET_OF = {
    ItemState.OPEN: "active",
    ItemState.LEASED: "active",
    ItemState.DONE: "done",
    ItemState.ADJUDICATION: "adjudication",
    ItemState.EXCLUDED: "excluded",
}

Delta = dict[str, int]


def _buckets(state: str, decision: str | None) -> set[str]:
    out = {_BUCKET_OF[ItemState(state)]}
    if state == ItemState.DONE and decision == FinalDecision.APPROVE:
        out.add("approved")
    return out


def transition(
    old_state: str, old_decision: str | None, new_state: str, new_decision: str | None, n: int = 1
) -> Delta:
    """The change to the counts when `n` items go from one (state, decision) to another."""
    old, new = _buckets(old_state, old_decision), _buckets(new_state, new_decision)
    delta = dict.fromkeys(old - new, -n)
    delta.update(dict.fromkeys(new - old, n))
    return delta


def merge(*deltas: Delta) -> Delta:
    out: Delta = {}
    for delta in deltas:
        for bucket, n in delta.items():
            out[bucket] = out.get(bucket, 0) + n
    return {b: n for b, n in out.items() if n}


def tally_step(*, project_id: int, writer: int, delta: Delta) -> tuple[str, list[Any]] | None:
    """An upsert of the writer's row, as a step of the decide statement (`{source}` is its FROM
    clause there, nothing on SQLite); None when nothing changes."""
    delta = merge(delta)
    if not delta:
        return None
    t = table(ReviewTally)
    casts = ", ".join(["CAST(%s AS BIGINT)"] * (2 + len(BUCKETS)))
    sql = (
        f"INSERT INTO {t} (project_id, writer, {', '.join(BUCKETS)}) SELECT {casts} "
        "{source} WHERE 1 = 1 ON CONFLICT (project_id, writer) DO UPDATE SET "
        + ", ".join(f"{b} = {t}.{b} + excluded.{b}" for b in BUCKETS)
    )
    return sql, [project_id, writer, *(delta.get(b, 0) for b in BUCKETS)]


def tally_add(*, project_id: int, writer: int, delta: Delta) -> None:
    """Record `delta` in the writer's row; call it inside the transaction that changed the items."""
    step = tally_step(project_id=project_id, writer=writer, delta=delta)
    if step is not None:
        execute(step[0].format(source=""), step[1])


def count_items(*, project: Project) -> dict[str, int]:
    """The counts from the items themselves (~300 ms at a million items on PostgreSQL)."""
    counts = dict.fromkeys(BUCKETS, 0)
    rows = (
        ReviewItem.objects.filter(project=project)
        .values_list("state", "decision")
        .annotate(n=Count("id"))
        .order_by()
    )
    for state, decision, n in rows:
        for bucket in _buckets(state, decision):
            counts[bucket] += n
    return counts


def tally_read(*, project: Project) -> dict[str, int]:
    sums = ReviewTally.objects.filter(project=project).aggregate(**{b: Sum(b) for b in BUCKETS})
    return {b: int(sums[b] or 0) for b in BUCKETS}


def tally_rebuild(*, project: Project) -> dict[str, int]:
    """Recount the project's items and start its tally over from them. Heals drift from writes
    that bypass the services (items deleted with their prompts or jobs). On PostgreSQL it locks
    the tally table meanwhile, so a decision committing during the count is neither lost nor
    counted twice: its delta lands after the new baseline. Idempotent."""
    with transaction.atomic():
        if is_postgres():
            execute(f"LOCK TABLE {table(ReviewTally)} IN SHARE ROW EXCLUSIVE MODE", [])
        counts = count_items(project=project)
        ReviewTally.objects.filter(project=project).delete()
        ReviewTally.objects.create(project=project, writer=SYSTEM, **counts)
    return counts
