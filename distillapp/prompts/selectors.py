"""Reads of prompts. Held-out prompts are evaluation data and never leave through the
generation/training selectors, whatever the caller passes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Q, QuerySet, TextField
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from distillapp.core.cursor import decode_cursor, encode_cursor
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt, PromptSet, Split

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_QUERY_CHARS = 500
# PostgreSQL: `search_vector` is filled after an import by workers.tasks.prompts (GIN-indexed,
# migrations 0003-0004; rows without a vector are not in the index). Until a set is fully
# indexed, its prompts without a vector are matched by computing the same vector on the fly, so
# results are never missing, only slower.
FTS_QUERY_SQL = "websearch_to_tsquery('english'::regconfig, %s)"
FTS_MATCH_SQL = f'"prompts_prompt"."search_vector" @@ {FTS_QUERY_SQL}'
FTS_MATCH_UNINDEXED_SQL = (
    f'({FTS_MATCH_SQL} OR ("prompts_prompt"."search_vector" IS NULL'
    f""" AND to_tsvector('english'::regconfig, "prompts_prompt"."text") @@ {FTS_QUERY_SQL}))"""
)


class HeldOutPromptError(Exception):
    """Raised when held-out prompts would reach a teacher or a training set."""


def _clean(value: str | None) -> str:
    """User input as the database can take it (PostgreSQL text cannot hold NUL)."""
    return (value or "").replace("\x00", "").strip()[:MAX_QUERY_CHARS]


def search(qs: QuerySet[Prompt], q: str | None, *, indexed: bool = False) -> QuerySet[Prompt]:
    """Full-text search (PostgreSQL) or case-insensitive substring (SQLite).

    `indexed`: every prompt in `qs` has its search vector (PromptSet.search_indexed), so only the
    GIN index is asked; otherwise prompts still waiting for theirs are matched the slow way.
    """
    q = _clean(q)
    if not q:
        return qs
    if connection.vendor == "postgresql":
        if indexed:
            return qs.filter(RawSQL(FTS_MATCH_SQL, [q], output_field=BooleanField()))
        return qs.filter(RawSQL(FTS_MATCH_UNINDEXED_SQL, [q, q], output_field=BooleanField()))
    return qs.filter(text__icontains=q)


def _json_scalar(value: str) -> Any:
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, bool | int | float) or parsed is None else value


def metadata_filter(qs: QuerySet[Prompt], key: str | None, value: str | None) -> QuerySet[Prompt]:
    """metadata[key] == value (string, or the number/boolean it spells); key only: the key exists.

    The key is passed as a parameter, never parsed as a lookup path.
    """
    key, value = _clean(key), _clean(value)
    if not key:
        return qs
    if not value:
        return qs.filter(metadata__has_key=key)
    if connection.vendor == "postgresql":
        condition = Q(metadata__contains={key: value})  # @>, served by the jsonb_path_ops GIN index
        scalar = _json_scalar(value)
        if scalar != value:
            condition |= Q(metadata__contains={key: scalar})
        # Implied by the match, but spelled out so the planner can use the GIN index, which
        # leaves out empty metadata (migration 0004: imports write no entry for those rows).
        return qs.filter(condition, ~Q(metadata={}))
    alias = f"_meta_{len(qs.query.annotations)}"
    return qs.alias(**{alias: Cast(KeyTextTransform(key, "metadata"), TextField())}).filter(
        Q(**{alias: value}) | Q(**{alias: str(_json_scalar(value)).lower()})
    )


def prompts_for_generation(
    *, prompt_set: PromptSet, q: str | None = None, metadata: dict[str, str] | None = None
) -> QuerySet[Prompt]:
    """Train-split prompts of a set, optionally narrowed; the only way generation gets prompts.

    The split filter is applied last, after any narrowing, so no argument can widen it.
    """
    qs = Prompt.objects.filter(prompt_set=prompt_set)
    qs = search(qs, q, indexed=bool(q) and _search_indexed(prompt_set))
    for key, value in (metadata or {}).items():
        qs = metadata_filter(qs, str(key), None if value is None else str(value))
    return qs.filter(split=Split.TRAIN).order_by("id")


def _search_indexed(prompt_set: PromptSet) -> bool:
    """Read fresh: the instance may predate the indexing task's last update."""
    if prompt_set.search_indexed or connection.vendor != "postgresql":
        return True
    return PromptSet.objects.filter(pk=prompt_set.pk, search_indexed=True).exists()


def ensure_trainable(prompt_ids: Iterable[int]) -> None:
    """Refuse any id that is a held-out prompt (for training sets built from arbitrary ids)."""
    ids = list(prompt_ids)
    leaked = 0
    for start in range(0, len(ids), 5000):
        leaked += Prompt.objects.filter(
            pk__in=ids[start : start + 5000], split=Split.HELDOUT
        ).count()
    if leaked:
        raise HeldOutPromptError(
            f"{leaked} held-out prompt(s) cannot be used for generation or training."
        )


def prompt_sets_for_project(*, project: Project) -> QuerySet[PromptSet]:
    return (
        PromptSet.objects.filter(project=project)
        .select_related("created_by")
        .order_by("-created_at", "-id")
    )


@dataclass(frozen=True)
class PromptPage:
    items: list[Prompt]
    next_cursor: str | None


def clamp_limit(limit: Any) -> int:
    try:
        value = int(limit)
    except (TypeError, ValueError):
        return PAGE_SIZE
    return max(1, min(value, MAX_PAGE_SIZE))


def prompt_set_prompts(
    *,
    prompt_set: PromptSet,
    cursor: str | None = None,
    q: str | None = None,
    split: str | None = None,
    meta_key: str | None = None,
    meta_value: str | None = None,
    limit: int = PAGE_SIZE,
) -> PromptPage:
    """One keyset page (id order) of a set's prompts, for browsing (held-out ones included).

    Raises InvalidCursor for a forged or foreign cursor; an unknown split is treated as no filter
    by callers that validated it (the API answers 422 first).
    """
    after = decode_cursor(cursor)
    limit = clamp_limit(limit)
    qs = Prompt.objects.filter(prompt_set=prompt_set)
    if after is not None:
        qs = qs.filter(id__gt=after)
    if split in Split.values:
        qs = qs.filter(split=split)
    indexed = bool(q) and _search_indexed(prompt_set)
    qs = metadata_filter(search(qs, q, indexed=indexed), meta_key, meta_value)
    items = list(qs.order_by("id")[: limit + 1])
    next_cursor = encode_cursor(items[limit - 1].pk) if len(items) > limit else None
    return PromptPage(items=items[:limit], next_cursor=next_cursor)
