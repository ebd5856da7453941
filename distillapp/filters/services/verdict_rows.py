"""Verdict upserts of a filter run: rows, not model objects, a chunk per statement."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from distillapp.filters.models import CompletionVerdict, VerdictState
from distillapp.filters.services.outcomes import Outcome

# Verdicts upserted per statement (COPY + one INSERT … ON CONFLICT on PostgreSQL).
SAVE_BATCH = 5000
# Columns written by a run; `restored_by`/`restored_at` are left alone (a restore survives).
_VERDICT_COLUMNS = (
    "completion_id",
    "project_id",
    "state",
    "flags",
    "reasons",
    "judge_score",
    "judge_rationale",
    "judge_key",
    "judge_error",
    "judge_reply",
    "duplicate_of_id",
)
# A verdict row without its completion and project ids: state .. duplicate_of_id.
VerdictRow = tuple[Any, ...]
PASSED_ROW: VerdictRow = (VerdictState.PASSED.value, "[]", "{}", None, "", "", "", "", None)


def save_outcomes(project_id: int, outcomes: dict[int, Outcome]) -> None:
    """Upsert one verdict per completion; a restored verdict stays restored."""
    rows = []
    for cid, o in outcomes.items():
        if o.flags:
            state = VerdictState.FILTERED.value
        elif o.awaiting_judge:
            state = VerdictState.PENDING.value
        else:
            state = VerdictState.PASSED.value
        rows.append(
            (
                cid,
                state,
                json.dumps(o.flags),
                json.dumps(o.reasons),
                o.judge_score,
                o.judge_rationale,
                o.judge_key,
                o.judge_error,
                o.judge_reply,
                o.duplicate_of,
            )
        )
    write_verdicts(project_id, rows)


def write_verdicts(project_id: int, rows: Sequence[VerdictRow]) -> None:
    """Upsert verdict rows `(completion_id, *PASSED_ROW's fields)`, flags and reasons as JSON.

    PostgreSQL: COPY into a temporary table, then one INSERT … ON CONFLICT … DO UPDATE per chunk
    (no model objects, no per-row parameters). SQLite: the same upsert, executemany. Either way a
    restored verdict keeps its state (decided inside the upsert, against the row it conflicts
    with, so a restore committing meanwhile is not overwritten)."""
    if not rows:
        return
    table = CompletionVerdict._meta.db_table
    cols = ", ".join(_VERDICT_COLUMNS)
    restored = VerdictState.RESTORED.value
    updates = ", ".join(
        [f"{c} = excluded.{c}" for c in _VERDICT_COLUMNS if c not in ("completion_id", "state")]
        + [
            f"state = CASE WHEN {table}.state = '{restored}' THEN {table}.state"
            " ELSE excluded.state END",
            "updated_at = excluded.updated_at",
        ]
    )
    upsert = f"ON CONFLICT (completion_id) DO UPDATE SET {updates}"
    for start in range(0, len(rows), SAVE_BATCH):
        chunk = rows[start : start + SAVE_BATCH]
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    "CREATE TEMP TABLE filters_verdict_load (completion_id bigint, project_id"
                    " bigint, state text, flags jsonb, reasons jsonb, judge_score double"
                    " precision, judge_rationale text, judge_key text, judge_error text,"
                    " judge_reply text, duplicate_of_id bigint) ON COMMIT DROP"
                )
                with cursor.cursor.copy(f"COPY filters_verdict_load ({cols}) FROM STDIN") as copy:
                    for cid, *rest in chunk:
                        copy.write_row((cid, project_id, *rest))
                cursor.execute(
                    f"INSERT INTO {table} ({cols}, updated_at) SELECT {cols}, now()"
                    f" FROM filters_verdict_load {upsert}"
                )
                # Dropped now too: inside an outer transaction ON COMMIT comes later.
                cursor.execute("DROP TABLE filters_verdict_load")
            else:
                now = connection.ops.adapt_datetimefield_value(timezone.now())
                marks = ", ".join(["%s"] * (len(_VERDICT_COLUMNS) + 1))
                cursor.executemany(
                    f"INSERT INTO {table} ({cols}, updated_at) VALUES ({marks}) {upsert}",
                    [(cid, project_id, *rest, now) for cid, *rest in chunk],
                )
