"""Reads of datasets: lists, and the rows a recipe selects from a project (the build and the live
preview share `dataset_rows`, so the preview counts what a build would write)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet

from distillapp.datasets.batches import BatchCounts, RowBatch, batch_from_rows, dumps
from distillapp.datasets.models import Dataset, DatasetVersion
from distillapp.datasets.recipe import (
    Recipe,
    dedupe_key,
    final_answer,
    strip_reasoning,
    validation_unit,
)
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob
from distillapp.projects.models import Project
from distillapp.prompts.models import Split, chat_messages
from distillapp.review.models import BestPick, FinalDecision, ItemState

CHUNK = 5000


def datasets_for_project(*, project: Project) -> QuerySet[Dataset]:
    return Dataset.objects.filter(project=project).select_related("created_by").order_by("name")


def dataset_versions(*, dataset: Dataset) -> QuerySet[DatasetVersion]:
    return (
        DatasetVersion.objects.filter(dataset=dataset)
        .select_related("created_by", "parent")
        .defer("lineage", "diff")
        .order_by("-number")
    )


def dataset_latest_built(*, dataset: Dataset) -> DatasetVersion | None:
    return (
        DatasetVersion.objects.filter(dataset=dataset, status="succeeded")
        .order_by("-number")
        .first()
    )


def jobs_for_recipe_form(*, project: Project) -> list[GenerationJob]:
    return list(
        GenerationJob.objects.filter(project=project)
        .select_related("prompt_set")
        .order_by("-created_at")[:200]
    )


@dataclass(slots=True)
class Row:
    completion_id: int
    job_id: int
    prompt_id: int
    prompt_set_id: int
    sample_index: int
    messages: list[dict[str, str]]
    target: str
    source: str  # review | edited | adjudicated | bulk | unreviewed
    split: str  # train | validation
    teacher_exact: bool  # the target is exactly the teacher's output
    has_topk: bool  # teacher_exact and the completion stored a top-k record
    judge_score: float | None
    verdict_state: str | None
    # The prompt's messages as canonical JSON (computed once per prompt; the writer reuses it).
    messages_json: str = ""
    # The DTK1 bytes when `has_topk` and the rows were asked `with_topk` (the build).
    topk: bytes | None = None

    @property
    def key(self) -> str:
        return f"{self.prompt_id}:{self.completion_id}"


_FIELDS = (
    "id",
    "job_id",
    "prompt_id",
    "sample_index",
    "text",
    "review_item__state",
    "review_item__target_text",
    "review_item__adjudicated_by_id",
    "review_item__bulk_action_id",
    "verdict__state",
    "verdict__judge_score",
    "prompt__messages",
    "prompt__text",
    "prompt__reference",
    "prompt__prompt_set_id",
    "prompt__split",
    "has_topk",
)


def candidates_queryset(*, project: Project, recipe: Recipe) -> QuerySet[Completion]:
    """Completions of the project that may become rows: approved (or, when asked, passed by the
    filters and not yet decided), of train-split prompts only. Held-out prompts are excluded here,
    whatever the recipe names, and the build checks every row's prompt again."""
    qs = Completion.objects.filter(
        job__project=project, status=CompletionStatus.OK, prompt__split=Split.TRAIN
    )
    if recipe.jobs:
        qs = qs.filter(job_id__in=recipe.jobs)
    approved = Q(review_item__state=ItemState.DONE, review_item__decision=FinalDecision.APPROVE)
    if recipe.include_unreviewed:
        undecided = Q(review_item__isnull=True) | Q(
            review_item__state__in=[ItemState.OPEN, ItemState.LEASED],
            review_item__reviews_count=0,
        )
        qs = qs.filter(approved | (Q(verdict__state__in=["passed", "restored"]) & undecided))
    else:
        qs = qs.filter(approved)
    if recipe.min_judge_score is not None:
        qs = qs.filter(verdict__judge_score__gte=recipe.min_judge_score)
    return qs


def _raw_rows(qs: QuerySet[Any]) -> Iterator[tuple[Any, ...]]:
    """The query's rows as plain tuples from a server-side cursor (PostgreSQL), `CHUNK` at a
    time: no model or converter work per row (JSON columns stay text; the caller parses each
    prompt's messages once)."""
    sql, params = qs.query.get_compiler(using=qs.db).as_sql()
    with connections[qs.db].chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(CHUNK):
            yield from rows


def _messages(raw: Any, text: str) -> list[dict[str, str]]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    return chat_messages(raw, text)


def dataset_rows(
    *,
    project: Project,
    recipe: Recipe,
    stats: Counter[str] | None = None,
    with_topk: bool = False,
) -> Iterator[Row]:
    """The rows `recipe` selects, in a stable order (prompt id, then completion id).

    `stats` (when given) receives what was kept and dropped, and why: candidates,
    dropped_reasoning, dropped_no_reference, dropped_per_prompt, dropped_duplicates.
    Memory: pair dedupe keeps the hashes of one prompt's rows (rows come grouped by prompt);
    target dedupe keeps an 8-byte hash per row of the whole version."""
    stats = stats if stats is not None else Counter()
    best = set(BestPick.objects.filter(project=project).values_list("completion_id", flat=True))
    qs = candidates_queryset(project=project, recipe=recipe).order_by("prompt_id", "id")
    if with_topk:  # the bytes come with the row: no second query per batch
        qs = qs.values_list(*_FIELDS[:-1], "topk")
    else:
        qs = qs.annotate(
            has_topk=ExpressionWrapper(Q(topk__isnull=False), output_field=BooleanField())
        ).values_list(*_FIELDS)
    per_prompt_dedupe = recipe.dedupe == "pair"
    seen: set[int] = set()
    reasoning = recipe.reasoning
    for prompt_id, group in itertools.groupby(_raw_rows(qs), key=lambda r: r[2]):
        qualifying: list[tuple[Row, bool]] = []
        messages: list[dict[str, str]] | None = None
        messages_json = ""
        n = 0
        for r in group:
            n += 1
            (cid, job_id, _pid, sample, text, state, target_text, adj, bulk) = r[:9]
            (v_state, score, p_messages, p_text, reference, set_id, split, has_topk) = r[9:]
            if split != Split.TRAIN:  # cannot happen: the query asks for train only
                continue
            if state == ItemState.DONE:
                target = target_text if target_text is not None else text
                source = (
                    "edited"
                    if target_text is not None
                    else "adjudicated"
                    if adj
                    else "bulk"
                    if bulk
                    else "review"
                )
            else:
                target, source = text, "unreviewed"
            if reasoning == "strip":
                target = strip_reasoning(target)
            elif reasoning == "match_reference":
                if reference is None or not reference.strip():
                    stats["dropped_no_reference"] += 1
                    continue
                if final_answer(target) != " ".join(reference.split()).casefold():
                    stats["dropped_reasoning"] += 1
                    continue
            if not target.strip():
                stats["dropped_empty"] += 1
                continue
            if messages is None:
                messages = _messages(p_messages, p_text)
                messages_json = dumps(messages)
            exact = target == text
            row = Row(
                completion_id=cid,
                job_id=job_id,
                prompt_id=prompt_id,
                prompt_set_id=set_id,
                sample_index=sample,
                messages=messages,
                target=target,
                source=source,
                split="train",
                teacher_exact=exact,
                has_topk=bool(exact and has_topk),
                topk=bytes(has_topk) if with_topk and exact and has_topk else None,
                judge_score=score,
                verdict_state=v_state,
                messages_json=messages_json,
            )
            qualifying.append((row, cid in best))
        stats["candidates"] += n
        if recipe.per_prompt == "one" and len(qualifying) > 1:
            chosen = min(
                qualifying,
                key=lambda rb: (
                    not rb[1],
                    -(rb[0].judge_score if rb[0].judge_score is not None else float("-inf")),
                    rb[0].job_id,
                    rb[0].sample_index,
                    rb[0].completion_id,
                ),
            )
            stats["dropped_per_prompt"] += len(qualifying) - 1
            qualifying = [chosen]
        if not qualifying:
            continue
        split = (
            "validation"
            if recipe.validation_fraction
            and validation_unit(recipe.seed, prompt_id) < recipe.validation_fraction
            else "train"
        )
        if per_prompt_dedupe:
            # Same prompt, same target: only this prompt's targets matter (rows come by prompt).
            targets: set[str] = set()
            for row, _best in qualifying:
                if row.target in targets:
                    stats["dropped_duplicates"] += 1
                    continue
                targets.add(row.target)
                row.split = split
                yield row
            continue
        for row, _best in qualifying:
            key = dedupe_key(recipe.dedupe, prompt_id, row.target)
            if key in seen:
                stats["dropped_duplicates"] += 1
                continue
            seen.add(key)
            row.split = split
            yield row


class RowBatches:
    """`dataset_rows` for the build, as column batches (`batches.RowBatch`) of about `batch_rows`
    rows: on PostgreSQL from a COPY stream that starts at once on a connection of its own
    (`pgstream`); elsewhere (and inside a transaction) from `dataset_rows`. `after_rows()` is
    `after()`: run on the stream's thread once the rows are read (its connection is idle then),
    or here when asked. With `topk_bytes=False` (counting only) a record may come as a one-byte
    stand-in. Call `close()`."""

    def __init__(
        self,
        *,
        project: Project,
        recipe: Recipe,
        stats: Counter[str],
        batch_rows: int = 50_000,
        after: Callable[[], Any] | None = None,
        topk_bytes: bool = True,
    ) -> None:
        from distillapp.datasets import pgstream

        self._stream: pgstream.RowBatches | None = None
        if pgstream.usable():
            self._stream = pgstream.RowBatches(
                project=project,
                recipe=recipe,
                stats=stats,
                batch_rows=batch_rows,
                after=after,
                topk_bytes=topk_bytes,
            )
        self._project, self._recipe, self._stats = project, recipe, stats
        self._batch_rows = batch_rows
        self._after = after

    def __iter__(self) -> Iterator[RowBatch]:
        if self._stream is not None:
            yield from self._stream
            return
        rows = dataset_rows(
            project=self._project, recipe=self._recipe, stats=self._stats, with_topk=True
        )
        while chunk := list(itertools.islice(rows, self._batch_rows)):
            yield batch_from_rows(chunk)

    def after_rows(self) -> Any:
        if self._stream is not None:
            return self._stream.after.result()
        return self._after() if self._after is not None else None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def recipe_preview(*, project: Project, recipe: Recipe) -> dict[str, Any]:
    """What a build with `recipe` would write now: rows by split and source, prompts, how many
    carry the teacher's top-k, and what was dropped (the build form's live preview). The same
    batches and counts as the build, so on PostgreSQL it reads the fast COPY stream too."""
    stats: Counter[str] = Counter()
    counts = BatchCounts()
    # Counting records needs no record bytes (a stand-in on PostgreSQL, two thirds less to send).
    batches = RowBatches(project=project, recipe=recipe, stats=stats, topk_bytes=False)
    try:
        for batch in batches:
            counts.add(batch)
    finally:
        batches.close()
    totals = counts.as_dict()
    return {
        "rows": totals["train"] + totals["validation"],
        **totals,
        "candidates": stats["candidates"],
        "dropped": {
            k.removeprefix("dropped_"): v
            for k, v in sorted(stats.items())
            if k.startswith("dropped_")
        },
    }
