"""Writes of the filters app: configuration, runs, verdicts, restores.

A run (`filter_run_execute`, `filters_run_for_job`) is idempotent: it recomputes every verdict
in its scope from the completions and the current configuration and upserts one row per
completion. Judge scores are reused when the same judge (teacher, model, rubric) gave them, so a
re-run does not pay for the calls again. A human restore survives re-runs.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from distillapp.core.queues import Queue
from distillapp.core.runs.services import (
    ClaimLost,
    ClaimState,
    run_cancel,
    run_claim,
    run_end,
    run_enqueue,
    run_fail,
    run_heartbeat,
)
from distillapp.filters import config as C
from distillapp.filters import dedup, heuristics
from distillapp.filters.config import FilterConfig, validate_config
from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus, VerdictState
from distillapp.filters.selectors import filter_config_for_project, filter_run_active
from distillapp.projects.models import Project

logger = logging.getLogger(__name__)

_SAVE_BATCH = 1000
# Completions read at once: the pipeline's memory is one batch plus compact state per completion.
_BATCH = 2000
_PROGRESS_EVERY_S = 1.0
_KEPT_STATES = (VerdictState.PASSED, VerdictState.RESTORED, VerdictState.PENDING)


# ---- configuration ---------------------------------------------------------------------------


def filter_config_update(*, project: Project, data: dict[str, Any]) -> FilterConfig:
    """Validate and store `Project.settings["filters"]`; missing keys take their defaults."""
    from distillapp.generation.models import Teacher, TeacherKind

    config = validate_config(data)
    if config.judge_teacher_id is not None:
        teacher = Teacher.objects.filter(pk=config.judge_teacher_id, project=project).first()
        if teacher is None:
            raise ValidationError({"judge_teacher_id": ["Pick a teacher of this project."]})
        if teacher.kind == TeacherKind.HF_LOCAL and not teacher.model_path:
            raise ValidationError(
                {"judge_teacher_id": ["That local teacher has no model folder to judge with."]}
            )
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        locked.settings = {**(locked.settings or {}), "filters": config.as_dict()}
        locked.save(update_fields=["settings"])
    project.settings = locked.settings
    return config


# ---- runs -------------------------------------------------------------------------------------


def filter_run_start(*, project: Project, user: Any, job: Any = None) -> FilterRun:
    """Queue a run over one job's completions or the whole project; one active run per project."""
    if job is not None and job.project_id != project.pk:
        raise ValidationError({"job_id": ["That job is not in this project."]})
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        active = filter_run_active(project=project)
        if active is not None:
            raise ValidationError(
                f"A filter run ({active.scope_label}) is already {active.status}; wait for it to finish."
            )
        run = FilterRun.objects.create(
            project=project,
            job=job,
            created_by=user if getattr(user, "pk", None) else None,
            message="Waiting for a worker.",
        )
        run_enqueue(run)
    return run


def filters_start_for_job(*, job: Any) -> FilterRun:
    """Queue the automatic filter run of a job that just finished (called inside the transaction
    that ends the job, which only one worker can commit, so a job gets one such run)."""
    run = FilterRun.objects.create(
        project_id=job.project_id, job=job, trigger="job_finished", message="Waiting for a worker."
    )
    run_enqueue(run)
    return run


def filters_queue(project: Project) -> Queue:
    """Where the project's filter runs execute: a local judge model is loaded by the run itself,
    so with one the run goes to a `gpu` worker (torch, the model's folder); else `default`."""
    from distillapp.generation.models import Teacher, TeacherKind

    judge_id = filter_config_for_project(project=project).judge_teacher_id
    if judge_id is None:
        return Queue.DEFAULT
    local = Teacher.objects.filter(pk=judge_id, project=project, kind=TeacherKind.HF_LOCAL)
    return Queue.GPU if local.exists() else Queue.DEFAULT


def filter_run_cancel(*, run: FilterRun) -> FilterRun:
    """Queued → cancelled; running → cancelling (the worker stops at its next progress write)."""
    return run_cancel(run)


def filter_run_execute(*, run_id: int) -> FilterRun | None:
    """Claim and run a FilterRun (or take over one whose worker died). Idempotent: a second
    delivery of the same task gets no claim and returns None; verdicts are upserts."""
    claim = run_claim(FilterRun, pk=run_id)
    if claim.state != ClaimState.CLAIMED or claim.run is None:
        return None
    run = FilterRun.objects.select_related("project", "job").get(pk=run_id)
    token = claim.token
    try:
        _execute(run, token)
    except ClaimLost:
        logger.warning("filter run %s: another worker took it over; this one stops.", run_id)
        return None
    except _Cancelled:
        run_end(FilterRun, pk=run_id, token=token, status=RunStatus.CANCELLED, message="Cancelled.")
    except Exception as exc:
        logger.exception("filter run %s failed", run_id)
        run_fail(FilterRun, pk=run_id, token=token, message=f"Failed: {type(exc).__name__}: {exc}")
        raise
    run.refresh_from_db()
    return run


class _Cancelled(Exception):
    pass


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
            status = run_heartbeat(
                FilterRun,
                pk=self.run.pk,
                token=self.token,
                done=self.done,
                total=self.total,
                message=self.run.message,
            )
            if status == RunStatus.CANCELLING:
                raise _Cancelled


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
    fields = ("prompt_id", "text", "finish_reason", "prompt__text", "prompt__reference")
    for rows in _batches(scope, (*fields, "prompt__metadata")):
        flagged: dict[int, _Outcome] = {}
        ranks = []
        for cid, _pid, text, finish_reason, prompt_text, reference, metadata in rows:
            outcome = _check_one(
                config, text, finish_reason, prompt_text or "", reference, metadata or {}
            )
            if outcome.flags:
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
    for start in range(0, len(clean), _BATCH):
        batch = clean[start : start + _BATCH]
        outcomes = {cid: _Outcome() for cid in batch}
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

    return dict(Completion.objects.filter(id__in=ids).values_list("id", "text"))


def _check_one(
    config: FilterConfig,
    text: str,
    finish_reason: str,
    prompt_text: str,
    reference: str | None,
    metadata: dict[str, Any],
) -> _Outcome:
    out = _Outcome()
    empty = heuristics.check_empty(text)
    if config.is_enabled(C.EMPTY) and empty:
        out.fail(C.EMPTY, empty)
    if config.is_enabled(C.TRUNCATED) and (reason := heuristics.check_truncated(finish_reason)):
        out.fail(C.TRUNCATED, reason)
    if empty:
        # Nothing else can be judged about an empty text (its length check would say the same).
        return out
    if config.is_enabled(C.LENGTH) and (
        reason := heuristics.check_length(
            text, min_chars=config.min_chars, max_chars=config.max_chars
        )
    ):
        out.fail(C.LENGTH, reason)
    if config.is_enabled(C.REFUSAL) and (
        reason := heuristics.check_refusal(text, phrases=config.refusal_phrases)
    ):
        out.fail(C.REFUSAL, reason)
    if config.is_enabled(C.REPETITION) and (
        reason := heuristics.check_repetition(
            text, n=config.repetition_n, threshold=config.repetition_threshold
        )
    ):
        out.fail(C.REPETITION, reason)
    if config.is_enabled(C.ECHO) and (
        reason := heuristics.check_echo(text, prompt=prompt_text, threshold=config.echo_threshold)
    ):
        out.fail(C.ECHO, reason)
    if config.is_enabled(C.REFERENCE) and reference is not None and reference.strip():
        mode = metadata.get("reference_mode") if isinstance(metadata, dict) else None
        mode = mode if mode in C.REFERENCE_MODES else config.reference_mode
        if reason := heuristics.check_reference(text, reference=reference, mode=mode):
            out.fail(C.REFERENCE, reason)
    return out


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


def _save(project: Project, outcomes: dict[int, _Outcome]) -> None:
    """Upsert one verdict per completion; a restored verdict stays restored (row locks held)."""
    ids = list(outcomes)
    for start in range(0, len(ids), _SAVE_BATCH):
        batch = ids[start : start + _SAVE_BATCH]
        with transaction.atomic():
            restored = set(
                CompletionVerdict.objects.select_for_update()
                .filter(completion_id__in=batch, state=VerdictState.RESTORED)
                .values_list("completion_id", flat=True)
            )
            objs = []
            for cid in batch:
                o = outcomes[cid]
                if cid in restored:
                    state = VerdictState.RESTORED
                elif o.flags:
                    state = VerdictState.FILTERED
                elif o.awaiting_judge:
                    state = VerdictState.PENDING
                else:
                    state = VerdictState.PASSED
                objs.append(
                    CompletionVerdict(
                        completion_id=cid,
                        project=project,
                        state=state,
                        flags=o.flags,
                        reasons=o.reasons,
                        judge_score=o.judge_score,
                        judge_rationale=o.judge_rationale,
                        judge_key=o.judge_key,
                        judge_error=o.judge_error,
                        judge_reply=o.judge_reply,
                        duplicate_of_id=o.duplicate_of,
                    )
                )
            CompletionVerdict.objects.bulk_create(
                objs,
                update_conflicts=True,
                unique_fields=["completion"],
                update_fields=[
                    "project",
                    "state",
                    "flags",
                    "reasons",
                    "judge_score",
                    "judge_rationale",
                    "judge_key",
                    "judge_error",
                    "judge_reply",
                    "duplicate_of",
                    "updated_at",
                ],
            )


# ---- human overrides ------------------------------------------------------------------------


def verdict_restore(*, completion: Any, user: Any) -> CompletionVerdict:
    """A human keeps a filtered-out completion: state → restored; flags and reasons stay."""
    with transaction.atomic():
        verdict = (
            CompletionVerdict.objects.select_for_update().filter(completion=completion).first()
        )
        if verdict is None or verdict.state != VerdictState.FILTERED:
            if verdict is not None and verdict.state == VerdictState.RESTORED:
                return verdict
            raise ValidationError("Only a filtered-out completion can be restored.")
        verdict.state = VerdictState.RESTORED
        verdict.restored_by = user
        verdict.restored_at = timezone.now()
        verdict.save(update_fields=["state", "restored_by", "restored_at", "updated_at"])
    return verdict


def verdict_unrestore(*, completion: Any, user: Any) -> CompletionVerdict:
    """Undo a restore: back to filtered out (the filters' flags still stand)."""
    with transaction.atomic():
        verdict = (
            CompletionVerdict.objects.select_for_update().filter(completion=completion).first()
        )
        if verdict is None or verdict.state != VerdictState.RESTORED:
            if verdict is not None and verdict.state == VerdictState.FILTERED:
                return verdict
            raise ValidationError("Only a restored completion can be filtered out again.")
        verdict.state = VerdictState.FILTERED if verdict.flags else VerdictState.PASSED
        verdict.restored_by = None
        verdict.restored_at = None
        verdict.save(update_fields=["state", "restored_by", "restored_at", "updated_at"])
    return verdict
