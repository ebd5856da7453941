"""Queue sync: one item per reviewable completion, with its state and "uncertain first" priority."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.db import connection, transaction
from django.db.models import F, Max, Min, Q
from django.utils import timezone

from distillapp.generation.models import Completion, CompletionStatus, GenerationJob
from distillapp.projects.models import Project
from distillapp.review.conf import review_settings
from distillapp.review.models import ItemState, ReviewItem, ReviewQueueState
from distillapp.review.services.tally import SYSTEM, tally_add, tally_rebuild, transition

REVIEWABLE_VERDICT_STATES = ("passed", "restored")
BATCH = 5000


def reviewable_q(prefix: str = "completion__") -> Q:
    """Completions without a verdict, or whose verdict passed or was restored by a human."""
    return Q(**{f"{prefix}verdict__isnull": True}) | Q(
        **{f"{prefix}verdict__state__in": REVIEWABLE_VERDICT_STATES}
    )


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
        # Fresh statistics, or the planner takes a big table for empty.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {ReviewItem._meta.db_table}")
    if (
        force
        or ReviewItem.objects.filter(project=project)[:SYNC_INLINE_LIMIT].count()
        < SYNC_INLINE_LIMIT
    ):
        _refresh_priorities(project)
    if force:
        # Recount the progress from the items, which heals what bypassed the services (items
        # deleted with their prompts); the refresh above read every item anyway.
        tally_rebuild(project=project)
    return added


def _insert_missing_items(project: Project) -> int:
    """INSERT … SELECT every OK completion that has no item yet, in id ranges of _INSERT_RANGE so
    each statement's deferred foreign-key checks stay small (docs/review.md has the measurement)."""
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
            inserted = max(cursor.rowcount, 0)
            tally_add(project_id=project.pk, writer=SYSTEM, delta={"active": inserted})
            added += inserted
    return added


_INSERT_RANGE = 20_000


def _write_priorities(project: Project, changed: list[tuple[int, float, str, str]]) -> None:
    """Write (id, priority, state read, new state): priorities as they are, a state only where it
    is still the one read (a decision may have moved the item meanwhile), and the change of the
    counts with it."""
    if not changed:
        return
    moves: dict[tuple[str, str], list[int]] = {}
    for pk, _p, old, new in changed:
        if old != new:
            moves.setdefault((old, new), []).append(pk)
    for (old, new), ids in moves.items():
        with transaction.atomic():
            moved = ReviewItem.objects.filter(pk__in=ids, state=old).update(state=new)
            tally_add(
                project_id=project.pk, writer=SYSTEM, delta=transition(old, None, new, None, moved)
            )
    if connection.vendor != "postgresql":
        ReviewItem.objects.bulk_update(
            [ReviewItem(pk=pk, priority=p) for pk, p, _o, _n in changed],
            ["priority"],
            batch_size=500,
        )
        return
    # UPDATE … FROM (VALUES …): one statement per batch instead of a CASE per row.
    table = ReviewItem._meta.db_table
    rows = ", ".join(["(%s::bigint, %s::double precision)"] * len(changed))
    params = [x for pk, p, _o, _n in changed for x in (pk, p)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS r SET priority = v.p FROM (VALUES {rows}) AS v(id, p) WHERE r.id = v.id",
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
    changed: list[tuple[int, float, str, str]] = []
    for _key, group_iter in itertools.groupby(
        rows.iterator(chunk_size=BATCH), key=lambda r: (r["job_id"], r["prompt_id"])
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
                changed.append((row["id"], priority, row["state"], state))
        if len(changed) >= BATCH:
            _write_priorities(project, changed)
            changed = []
    _write_priorities(project, changed)
