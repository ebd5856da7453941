"""Small helpers for the hand-written SQL of the claim and decide paths.

Those two run for every item a reviewer sees. Through the ORM, building queries cost more CPU than
the database's work, and 16 reviewers on two cores were bound by it; so they issue a few plain
statements that work on PostgreSQL and SQLite alike. Each helper looks the connection up once:
every attribute read through `django.db.connection` is a context-local lookup.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model


def _db() -> BaseDatabaseWrapper:
    return connections[DEFAULT_DB_ALIAS]


def table(model: type[Model]) -> str:
    return _db().ops.quote_name(model._meta.db_table)


def _params(db: BaseDatabaseWrapper, params: Sequence[Any]) -> list[Any]:
    """Parameters as the backend stores them (SQLite keeps datetimes as naive UTC text)."""
    return [db.ops.adapt_datetimefield_value(p) if isinstance(p, datetime) else p for p in params]


def placeholders(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def _cursor(db: BaseDatabaseWrapper, prepared: bool) -> Any:
    """Django's cursor, or on PostgreSQL for `prepared` statements one that binds parameters on
    the server, so psycopg prepares a statement once it has run a few times on the connection and
    PostgreSQL stops planning it on every run (planning was most of a claim's database time).
    That pays off with persistent connections (DATABASE_CONN_MAX_AGE); with one connection per
    request such statements simply run unprepared. They keep constants (states, choices) in the
    SQL text, so the generic plan can still use the partial indexes."""
    if not (prepared and db.vendor == "postgresql"):
        return db.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor  # type: ignore[attr-defined]

    db.ensure_connection()
    if db.connection.prepare_threshold is None:
        # Django turns psycopg's preparing off; only server-binding cursors (these) consult it.
        db.connection.prepare_threshold = PREPARE_AFTER
    with db.wrap_database_errors:
        return db._prepare_cursor(ServerBindingCursor(db.connection))  # type: ignore[attr-defined]


PREPARE_AFTER = 5  # psycopg's default threshold


def execute(sql: str, params: Sequence[Any], *, prepared: bool = False) -> int:
    db = _db()
    with _cursor(db, prepared) as cursor:
        cursor.execute(sql, _params(db, params))
        return int(cursor.rowcount)


def fetchone(sql: str, params: Sequence[Any], *, prepared: bool = False) -> tuple[Any, ...] | None:
    db = _db()
    with _cursor(db, prepared) as cursor:
        cursor.execute(sql, _params(db, params))
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


def fetchall(sql: str, params: Sequence[Any], *, prepared: bool = False) -> list[tuple[Any, ...]]:
    db = _db()
    with _cursor(db, prepared) as cursor:
        cursor.execute(sql, _params(db, params))
        return [tuple(r) for r in cursor.fetchall()]


def literal(value: str) -> str:
    """A constant (a state or choice value, never user input) as an SQL string literal."""
    assert "'" not in value and "\\" not in value
    return f"'{value}'"


def is_postgres() -> bool:
    return _db().vendor == "postgresql"


def for_update(*, of: str = "", skip_locked: bool = False) -> str:
    """The row-lock clause, or nothing on SQLite (its single writer lock serialises writes)."""
    features = _db().features
    if not features.has_select_for_update:
        return ""
    clause = f" FOR UPDATE OF {of}" if of else " FOR UPDATE"
    if skip_locked and features.has_select_for_update_skip_locked:
        clause += " SKIP LOCKED"
    return clause


_Converter = Callable[[Any, Any, Any], Any]
_Plan = tuple[str, list[tuple[type[Model], list[str], list[Any], list[list[_Converter]]]]]
# Per connection (the converters are bound to its backend), per model list and join.
_plans: weakref.WeakKeyDictionary[BaseDatabaseWrapper, dict[tuple[Any, ...], _Plan]] = (
    weakref.WeakKeyDictionary()
)


def fetch_joined(
    models: Sequence[tuple[type[Model], str]],
    from_sql: str,
    params: Sequence[Any],
    *,
    head: str = "",
    extra: Sequence[str] = (),
    prepared: bool = False,
) -> tuple[tuple[Any, ...], list[Model]] | None:
    """One instance of each model from one joined row, as `select_related` would build them, for
    a fraction of its query-building cost. `models` pairs each model with its alias in `from_sql`;
    `head` (a WITH clause) goes before the SELECT; the `extra` columns come back as they are."""
    db = _db()
    key = (*models, from_sql, head, *extra)
    plan = _plans.setdefault(db, {}).get(key)
    if plan is None:
        columns: list[str] = []
        parts = []
        for model, alias in models:
            fields = model._meta.concrete_fields
            cols = [field.get_col(alias) for field in fields]
            converters = [db.ops.get_db_converters(col) + col.get_db_converters(db) for col in cols]
            parts.append((model, [f.attname for f in fields], cols, converters))
            columns.extend(f"{alias}.{db.ops.quote_name(f.column)}" for f in fields)
        plan = (f"{head} SELECT {', '.join([*extra, *columns])} {from_sql}", parts)
        _plans[db][key] = plan
    sql, parts = plan
    row = fetchone(sql, params, prepared=prepared)
    if row is None:
        return None
    out: list[Model] = []
    start = len(extra)
    for model, names, cols, converters in parts:
        values = []
        for value, col, funcs in zip(
            row[start : start + len(names)], cols, converters, strict=True
        ):
            for func in funcs:
                value = func(value, col, db)
            values.append(value)
        out.append(model.from_db(db.alias, names, values))
        start += len(names)
    return row[: len(extra)], out


def unchanged_since_snapshot(table_sql: str, alias: str) -> str:
    """SQL that is true when the locked row `alias` is the version this statement's snapshot saw.

    In READ COMMITTED, a row updated by a transaction that committed after the statement began is
    locked in its new version, while the statement's other reads still show the old state. Every
    write to an item's reviews or leases also updates the item row, so when this is true those
    reads are current. SQLite has one writer at a time: always true there."""
    if not is_postgres():
        return "1 = 1"
    return f"{alias}.xmin = (SELECT s.xmin FROM {table_sql} s WHERE s.id = {alias}.id)"
