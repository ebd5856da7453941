"""The filter pipeline of one run: stream the scope's completions in batches, run the heuristics,
find exact and near duplicates from compact per-completion state, reuse or ask for judge
scores, and upsert one verdict per completion."""

from __future__ import annotations

import json
import logging
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from distillapp.core.runs.services import (
    run_end,
    run_progress,
)
from distillapp.filters import config as C
from distillapp.filters import dedup, heuristics
from distillapp.filters.config import FilterConfig
from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus, VerdictState
from distillapp.filters.selectors import filter_config_for_project
from distillapp.projects.models import Project

logger = logging.getLogger(__name__)

# Verdicts upserted per statement (COPY + one INSERT … ON CONFLICT on PostgreSQL).
_SAVE_BATCH = 5000
# Completions read at once: the pipeline's memory is one batch plus compact state per completion.
_BATCH = 2000
_PROGRESS_EVERY_S = 1.0
_KEPT_STATES = (VerdictState.PASSED, VerdictState.RESTORED, VerdictState.PENDING)


class _Progress:
    """Progress and heartbeat of the claimed run, written at most once a second."""

    def __init__(self, run: FilterRun, token: str) -> None:
        self.run = run
        self.token = token
        self.done = 0
        self.total = 0
        self._last = 0.0

    def update(
        self,
        *,
        message: str | None = None,
        done: int | None = None,
        total: int | None = None,
        force: bool = False,
    ) -> None:
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        if message is not None:
            self.run.message = message
        now = time.monotonic()
        if force or now - self._last >= _PROGRESS_EVERY_S:
            self._last = now
            run_progress(
                FilterRun,
                pk=self.run.pk,
                token=self.token,
                done=self.done,
                total=self.total,
                message=self.run.message,
            )


@dataclass
class _Outcome:
    flags: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    duplicate_of: int | None = None
    judge_score: float | None = None
    judge_rationale: str = ""
    judge_key: str = ""
    judge_error: str = ""
    judge_reply: str = ""
    awaiting_judge: bool = False

    def fail(self, name: str, reason: str) -> None:
        if name not in self.flags:
            self.flags.append(name)
        self.reasons[name] = reason


@dataclass
class _Tally:
    """The run's counts, added up as verdicts are written (no per-completion state)."""

    total: int = 0
    filtered: int = 0
    judge_errors: int = 0
    by_flag: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: _Outcome) -> None:
        if outcome.flags:
            self.filtered += 1
        for name in outcome.flags:
            self.flag(name)
        if outcome.judge_error:
            self.judge_errors += 1

    def flag(self, name: str) -> None:
        self.by_flag[name] = self.by_flag.get(name, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "filtered": self.filtered,
            "passed": self.total - self.filtered,
            "by_flag": self.by_flag,
            "judge_errors": self.judge_errors,
        }


def _batches(
    qs: Any, fields: tuple[str, ...], size: int = _BATCH
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of `qs` in id order, `size` at a time (keyset pagination: flat memory, no OFFSET)."""
    last = 0
    while True:
        rows = list(qs.filter(id__gt=last).order_by("id").values_list("id", *fields)[:size])
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _execute(run: FilterRun, token: str) -> None:
    """Stream the scope in batches: per-completion filters (verdicts of failures saved per batch),
    then duplicates over the whole project from compact per-completion state, then the verdicts
    of the rest, then the judge. Memory stays flat apart from that state (`dedup.DedupIndex`)."""
    from distillapp.generation.models import Completion, CompletionStatus

    project = run.project
    config = filter_config_for_project(project=project)
    progress = _Progress(run, token)
    ok = Completion.objects.filter(job__project=project, status=CompletionStatus.OK)
    scope = ok.filter(job_id=run.job_id) if run.job_id else ok
    total = scope.count()
    tally = _Tally(total=total)
    progress.update(message=f"Checking {total} completions.", done=0, total=total, force=True)

    index: dedup.DedupIndex | None = None
    if config.is_enabled(C.EXACT_DUPLICATE) or config.is_enabled(C.NEAR_DUPLICATE):
        index = dedup.DedupIndex(
            exact=config.is_enabled(C.EXACT_DUPLICATE),
            near=config.is_enabled(C.NEAR_DUPLICATE),
            threshold=config.dedup_threshold,
            within_group=config.dedup_within_prompt,
            capacity=ok.count() if run.job_id else total,
        )
    # The scope's completions that failed no filter yet: their verdicts are written once the
    # duplicates are known (8 bytes each).
    clean: array[int] = array("q")
    done = 0
    checks = _Checks(config)
    for rows in _batches(scope, ("prompt_id", "text", "finish_reason")):
        prompts = _prompts_of(rows, checks)
        flagged: dict[int, _Outcome] = {}
        ranks = []
        for cid, pid, text, finish_reason in rows:
            outcome = checks.run(text, finish_reason, prompts.get(pid, _NO_PROMPT))
            if outcome is not None:
                flagged[cid] = outcome
                tally.add(outcome)
                ranks.append(dedup.RANK_OTHER)
            else:
                clean.append(cid)
                ranks.append(dedup.RANK_CLEAN)
        if index is not None:
            index.add(
                [r[0] for r in rows],
                [r[1] for r in rows],
                ranks,
                [r[2] for r in rows],
                in_scope=True,
            )
        # A failure is final whatever the duplicates: saved now, so memory holds one batch.
        _save(project, flagged)
        done += len(rows)
        progress.update(done=done)

    duplicates: dedup.Duplicates | None = None
    if index is not None:
        progress.update(done=done, message="Looking for duplicates.", force=True)
        if run.job_id:
            # The rest of the project, ranked by its verdicts, so a later job's copy of an
            # earlier answer is caught and the earlier one kept.
            outside = ok.exclude(job_id=run.job_id)
            for rows in _batches(outside, ("prompt_id", "text", "verdict__state")):
                index.add(
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [_outside_rank(r[3]) for r in rows],
                    [r[2] for r in rows],
                    in_scope=False,
                )
                progress.update()
        duplicates = index.resolve(_fetch_texts)
        del index

    judge_key = ""
    teacher = None
    if config.is_enabled(C.JUDGE):
        teacher, judge_key = _judge_teacher(project, config)
        if teacher is None:
            run.message = "The judge's teacher no longer exists; judge skipped."

    progress.update(message="Saving verdicts.", force=True)
    if duplicates is not None:
        _flag_failed_duplicates(project, duplicates, clean, config, tally)
    waiting: array[int] = array("q")
    clean_ids = np.frombuffer(clean, dtype=np.int64) if len(clean) else np.zeros(0, np.int64)
    for start in range(0, len(clean_ids), _BATCH):
        batch = clean_ids[start : start + _BATCH]
        is_dup = (
            duplicates.contains(batch) if duplicates is not None else np.zeros(len(batch), bool)
        )
        if teacher is None:
            # Most verdicts: passed, nothing to say. Written as plain rows, no object each.
            passed = batch[~is_dup].tolist()
            _write_verdicts(project.pk, [(cid, *_PASSED_ROW) for cid in passed])
            outcomes = {int(cid): _Outcome() for cid in batch[is_dup]}
        else:
            outcomes = {int(cid): _Outcome() for cid in batch}
        if duplicates is not None:
            for cid, outcome in outcomes.items():
                _mark_duplicate(outcome, duplicates.get(cid), config)
        if teacher is not None:
            _apply_cached_judge(outcomes, config, judge_key)
        _save(project, outcomes)
        for cid, outcome in outcomes.items():
            if outcome.awaiting_judge:
                waiting.append(cid)  # counted once judged
            else:
                tally.add(outcome)
        progress.update()

    if waiting and teacher is not None:
        _run_judge(project, config, teacher, judge_key, waiting, tally, progress)

    counts = tally.as_dict()
    errors = counts["judge_errors"]
    run_end(
        FilterRun,
        pk=run.pk,
        token=token,
        status=RunStatus.SUCCEEDED,
        done=progress.total,
        total=progress.total,
        counts=counts,
        message=(
            f"Checked {counts['total']} completions: {counts['passed']} passed, {counts['filtered']} filtered out."
            + (f" The judge failed on {errors} (no score, not filtered out)." if errors else "")
            + (f" {run.message}" if "judge skipped" in run.message else "")
        ),
    )


def _outside_rank(state: str | None) -> int:
    if state is None:
        # Not checked yet (e.g. another job's run in progress): ranked like this run's clean
        # ones, by id, so two concurrent runs pick the same keeper.
        return dedup.RANK_CLEAN
    return dedup.RANK_KEPT if state in _KEPT_STATES else dedup.RANK_OTHER


def _fetch_texts(ids: Sequence[int]) -> dict[int, str]:
    from distillapp.generation.models import Completion

    return dict(_rows_by_id(Completion, ("id", "text"), list(ids)))


@dataclass(frozen=True)
class _Prompt:
    text: str
    reference: str | None
    metadata: Any


_NO_PROMPT = _Prompt("", None, {})


class _Checks:
    """The per-completion filters of one run, with the configuration read once (not per row)."""

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        on = config.is_enabled
        self.empty, self.truncated, self.length = on(C.EMPTY), on(C.TRUNCATED), on(C.LENGTH)
        self.refusal, self.repetition, self.echo = on(C.REFUSAL), on(C.REPETITION), on(C.ECHO)
        self.reference = on(C.REFERENCE)
        self.phrases = tuple(config.refusal_phrases)

    @property
    def needs_prompts(self) -> bool:
        return self.echo or self.reference

    def run(self, text: str, finish_reason: str, prompt: _Prompt) -> _Outcome | None:
        """The failures of one completion, or None when it passed every check."""
        failures: list[tuple[str, str]] = []
        empty = heuristics.check_empty(text)
        if self.empty and empty:
            failures.append((C.EMPTY, empty))
        if self.truncated and (reason := heuristics.check_truncated(finish_reason)):
            failures.append((C.TRUNCATED, reason))
        if not empty:
            # Nothing else can be judged about an empty text (its length check says the same).
            failures.extend(self._text_checks(text, prompt))
        if not failures:
            return None
        out = _Outcome()
        for name, reason in failures:
            out.fail(name, reason)
        return out

    def _text_checks(self, text: str, prompt: _Prompt) -> Iterator[tuple[str, str]]:
        config = self.config
        if self.length and (
            reason := heuristics.check_length(
                text, min_chars=config.min_chars, max_chars=config.max_chars
            )
        ):
            yield C.LENGTH, reason
        if self.refusal and (reason := heuristics.check_refusal(text, phrases=self.phrases)):
            yield C.REFUSAL, reason
        if self.repetition and (
            reason := heuristics.check_repetition(
                text, n=config.repetition_n, threshold=config.repetition_threshold
            )
        ):
            yield C.REPETITION, reason
        if self.echo and (
            reason := heuristics.check_echo(
                text, prompt=prompt.text, threshold=config.echo_threshold
            )
        ):
            yield C.ECHO, reason
        reference = prompt.reference
        if self.reference and reference is not None and reference.strip():
            metadata = prompt.metadata
            mode = metadata.get("reference_mode") if isinstance(metadata, dict) else None
            mode = mode if mode in C.REFERENCE_MODES else config.reference_mode
            if reason := heuristics.check_reference(text, reference=reference, mode=mode):
                yield C.REFERENCE, reason


def _prompts_of(rows: list[tuple[Any, ...]], checks: _Checks) -> dict[int, _Prompt]:
    """The prompts of a batch, read once each (a prompt's samples share them), only when a check
    needs them."""
    if not checks.needs_prompts:
        return {}
    from distillapp.prompts.models import Prompt

    ids = sorted({r[1] for r in rows})
    fields = ("id", "text", "reference", "metadata") if checks.reference else ("id", "text")
    out = {}
    for row in _rows_by_id(Prompt, fields, ids):
        metadata = row[3] if checks.reference else {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        out[row[0]] = _Prompt(row[1] or "", row[2] if checks.reference else None, metadata)
    return out


def _rows_by_id(model: Any, fields: tuple[str, ...], ids: list[int]) -> list[tuple[Any, ...]]:
    """`fields` (columns; the first is "id") of the rows with these ids. On PostgreSQL one array
    parameter (`= ANY`), not a thousand placeholders for the client to bind."""
    if connection.vendor != "postgresql":
        return list(model.objects.filter(id__in=ids).values_list(*fields))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(fields)} FROM {model._meta.db_table} WHERE id = ANY(%s)", [ids]
        )
        return cursor.fetchall()


def _mark_duplicate(
    outcome: _Outcome, found: tuple[int, int, int, float] | None, config: FilterConfig
) -> None:
    if found is None:
        return
    kind, first, keeper, similarity = found
    outcome.duplicate_of = keeper
    if kind == dedup.EXACT:
        outcome.fail(C.EXACT_DUPLICATE, f"Identical to completion #{first}; #{keeper} is kept.")
    else:
        outcome.fail(
            C.NEAR_DUPLICATE,
            f"Near-duplicate of completion #{keeper}, which is kept "
            f"(Jaccard {similarity:.2f}; threshold {config.dedup_threshold:.2f}).",
        )


def _flag_failed_duplicates(
    project: Project,
    duplicates: dedup.Duplicates,
    clean: array[int],
    config: FilterConfig,
    tally: _Tally,
) -> None:
    """Add the duplicate flag to completions of the run that failed another filter (their
    verdicts were saved in the first pass)."""
    ids = duplicates.ids[duplicates.in_scope]
    ids = ids[~np.isin(ids, np.frombuffer(clean, dtype=np.int64))] if len(clean) else ids
    for start in range(0, len(ids), _BATCH):
        batch = [int(x) for x in ids[start : start + _BATCH]]
        outcomes: dict[int, _Outcome] = {}
        for cid, flags, reasons in CompletionVerdict.objects.filter(
            completion_id__in=batch
        ).values_list("completion_id", "flags", "reasons"):
            outcome = _Outcome(flags=list(flags or []), reasons=dict(reasons or {}))
            before = len(outcome.flags)
            _mark_duplicate(outcome, duplicates.get(cid), config)
            for name in outcome.flags[before:]:
                tally.flag(name)
            outcomes[cid] = outcome
        _save(project, outcomes)


def _apply_cached_judge(
    outcomes: dict[int, _Outcome], config: FilterConfig, judge_key: str
) -> None:
    """Scores the same judge already gave are reused; the other clean completions wait."""
    clean = [cid for cid, o in outcomes.items() if not o.flags]
    cached = CompletionVerdict.objects.filter(
        completion_id__in=clean, judge_key=judge_key, judge_score__isnull=False
    ).values_list("completion_id", "judge_score", "judge_rationale")
    for cid, score, rationale in cached:
        _apply_judge(outcomes[cid], config, score, rationale, "", judge_key)
    for cid in clean:
        if not outcomes[cid].judge_key:
            outcomes[cid].awaiting_judge = True


def _judge_teacher(project: Project, config: FilterConfig) -> tuple[Any, str]:
    from distillapp.generation.models import Teacher, TeacherKind

    if config.judge_teacher_id is None:
        return None, ""
    teacher = Teacher.objects.filter(pk=config.judge_teacher_id, project=project).first()
    if teacher is None:
        return None, ""
    local = teacher.kind == TeacherKind.HF_LOCAL
    return teacher, config.judge_key(
        teacher_id=teacher.pk,
        model=teacher.model_path if local else teacher.model,
        base_url="local" if local else teacher.base_url,
    )


def _apply_judge(
    outcome: _Outcome,
    config: FilterConfig,
    score: float | None,
    rationale: str,
    error: str,
    key: str,
    reply: str = "",
) -> None:
    outcome.awaiting_judge = False
    if error or score is None:
        # No score is ever made up: the error (and an unreadable reply) is kept for people, and
        # the completion is not filtered out by the judge.
        outcome.judge_score, outcome.judge_rationale, outcome.judge_key = None, "", ""
        outcome.judge_error = error or "The judge gave no score."
        outcome.judge_reply = reply
        outcome.reasons[C.JUDGE] = f"The judge failed, so no score: {outcome.judge_error}"
        return
    outcome.judge_score, outcome.judge_rationale, outcome.judge_key = score, rationale, key
    if score < config.judge_threshold:
        outcome.fail(
            C.JUDGE,
            f"Judge score {score:g}/10, below the threshold {config.judge_threshold:g}: {rationale}",
        )
    else:
        outcome.reasons[C.JUDGE] = (
            f"Judge score {score:g}/10 (threshold {config.judge_threshold:g}): {rationale}"
        )


def _run_judge(
    project: Project,
    config: FilterConfig,
    teacher: Any,
    judge_key: str,
    waiting: array[int],
    tally: _Tally,
    progress: _Progress,
) -> None:
    from distillapp.filters.judge import client_for_teacher
    from distillapp.generation.models import Completion
    from workers.engine.judge import JudgeItem, JudgeResult

    base = progress.done
    progress.update(
        message=f"Judging {len(waiting)} completions with {teacher.name}.",
        total=base + len(waiting),
        force=True,
    )
    client = client_for_teacher(
        teacher,
        rubric=config.judge_rubric,
        concurrency=settings.FILTERS_JUDGE_CONCURRENCY,
        timeout=settings.FILTERS_JUDGE_TIMEOUT,
    )
    pending: dict[int, _Outcome] = {}
    finished = 0

    def on_result(result: JudgeResult) -> None:
        nonlocal finished
        outcome = _Outcome()
        _apply_judge(
            outcome,
            config,
            result.score,
            result.rationale,
            result.error,
            judge_key,
            result.reply,
        )
        tally.add(outcome)
        pending[result.key] = outcome
        finished += 1
        if len(pending) >= 100:
            _save(project, dict(pending))
            pending.clear()
        progress.update(done=base + finished)

    try:
        # Chunks keep memory flat and let results reach the database while the rest is judged.
        for start in range(0, len(waiting), 500):
            chunk = list(waiting[start : start + 500])
            rows = Completion.objects.filter(id__in=chunk).values_list("id", "prompt__text", "text")
            client.judge_many(
                [JudgeItem(cid, prompt or "", text) for cid, prompt, text in rows],
                on_result=on_result,
            )
    finally:
        client.close()
        if pending:
            _save(project, dict(pending))
    progress.update(done=base + finished, force=True)


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
_VerdictRow = tuple[Any, ...]
_PASSED_ROW: _VerdictRow = (VerdictState.PASSED.value, "[]", "{}", None, "", "", "", "", None)


def _save(project: Project, outcomes: dict[int, _Outcome]) -> None:
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
    _write_verdicts(project.pk, rows)


def _write_verdicts(project_id: int, rows: Sequence[_VerdictRow]) -> None:
    """Upsert verdict rows `(completion_id, *_PASSED_ROW's fields)`, flags and reasons as JSON.

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
    for start in range(0, len(rows), _SAVE_BATCH):
        chunk = rows[start : start + _SAVE_BATCH]
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
