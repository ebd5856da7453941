"""Writes of the filters app: configuration, runs, verdicts, restores.

A run (`filter_run_execute`, `filters_run_for_job`) is idempotent: it recomputes every verdict
in its scope from the completions and the current configuration and upserts one row per
completion. Judge scores are reused when the same judge (teacher, model, rubric) gave them, so a
re-run does not pay for the calls again. A human restore survives re-runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from distillapp.filters import config as C
from distillapp.filters import dedup, heuristics
from distillapp.filters.config import FilterConfig, validate_config
from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus, VerdictState
from distillapp.filters.selectors import STALE_AFTER, filter_config_for_project, filter_run_active
from distillapp.projects.models import Project

logger = logging.getLogger(__name__)

_SAVE_BATCH = 1000
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
    from workers.tasks.filters import execute_filter_run

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
        execute_filter_run.apply_async_on_commit((run.pk,), queue=filters_queue(project))
    return run


def filters_queue(project: Project) -> str:
    """Where the project's filter runs execute: a local judge model is loaded by the run itself,
    so with one the run goes to a `gpu` worker (torch, the model's folder); else `default`."""
    from distillapp.generation.models import Teacher, TeacherKind
    from workers.queues import Queue

    judge_id = filter_config_for_project(project=project).judge_teacher_id
    if judge_id is None:
        return Queue.DEFAULT.value
    local = Teacher.objects.filter(pk=judge_id, project=project, kind=TeacherKind.HF_LOCAL)
    return Queue.GPU.value if local.exists() else Queue.DEFAULT.value


def _claim(run_id: int) -> bool:
    """queued → running; also takes over a run whose worker died (stale heartbeat)."""
    now = timezone.now()
    return bool(
        FilterRun.objects.filter(pk=run_id)
        .filter(
            Q(status=RunStatus.QUEUED)
            | Q(status=RunStatus.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
        )
        .update(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, message="Starting.")
    )


def filter_run_execute(*, run_id: int) -> FilterRun | None:
    """Run a queued FilterRun. Returns None if another worker has it or it already finished."""
    if not _claim(run_id):
        return None
    run = FilterRun.objects.select_related("project", "job").get(pk=run_id)
    return _execute_guarded(run)


def filters_run_for_job(*, job: Any) -> FilterRun:
    """Filter a finished generation job's completions now (called by the worker task)."""
    now = timezone.now()
    run = FilterRun.objects.create(
        project_id=job.project_id,
        job=job,
        trigger="job_finished",
        status=RunStatus.RUNNING,
        started_at=now,
        heartbeat_at=now,
        message="Starting.",
    )
    run = FilterRun.objects.select_related("project", "job").get(pk=run.pk)
    return _execute_guarded(run)


def _execute_guarded(run: FilterRun) -> FilterRun:
    try:
        _execute(run)
    except Exception as exc:
        logger.exception("filter run %s failed", run.pk)
        FilterRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED,
            finished_at=timezone.now(),
            message=f"Failed: {type(exc).__name__}: {exc}"[:2000],
        )
        raise
    run.refresh_from_db()
    return run


class _Progress:
    def __init__(self, run: FilterRun) -> None:
        self.run = run
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
            FilterRun.objects.filter(pk=self.run.pk).update(
                done=self.done,
                total=self.total,
                message=self.run.message,
                heartbeat_at=timezone.now(),
            )


@dataclass
class _Outcome:
    flags: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    duplicate_of: int | None = None
    judge_score: float | None = None
    judge_rationale: str = ""
    judge_key: str = ""
    awaiting_judge: bool = False

    def fail(self, name: str, reason: str) -> None:
        if name not in self.flags:
            self.flags.append(name)
        self.reasons[name] = reason


def _execute(run: FilterRun) -> None:
    from distillapp.generation.models import Completion, CompletionStatus

    project = run.project
    config = filter_config_for_project(project=project)
    progress = _Progress(run)
    scope = Completion.objects.filter(job__project=project, status=CompletionStatus.OK)
    if run.job_id:
        scope = scope.filter(job_id=run.job_id)
    rows = list(
        scope.order_by("id").values_list(
            "id", "text", "finish_reason", "prompt__text", "prompt__reference", "prompt__metadata"
        )
    )
    progress.update(
        message=f"Checking {len(rows)} completions.", done=0, total=len(rows), force=True
    )

    outcomes: dict[int, _Outcome] = {}
    for n, (cid, text, finish_reason, prompt_text, reference, metadata) in enumerate(rows, 1):
        outcomes[cid] = _check_one(
            config, text, finish_reason, prompt_text or "", reference, metadata or {}
        )
        if n % 500 == 0:
            progress.update(done=n)
    progress.update(done=len(rows), message="Looking for duplicates.", force=True)

    if config.is_enabled(C.EXACT_DUPLICATE) or config.is_enabled(C.NEAR_DUPLICATE):
        _mark_duplicates(project, config, outcomes, job_id=run.job_id)

    judge_key = ""
    teacher = None
    if config.is_enabled(C.JUDGE):
        teacher, judge_key = _judge_teacher(project, config)
        if teacher is not None:
            cached = {
                cid: (score, rationale)
                for cid, score, rationale in _scope_verdicts(project, run.job_id)
                .filter(judge_key=judge_key, judge_score__isnull=False)
                .values_list("completion_id", "judge_score", "judge_rationale")
            }
            for cid, outcome in outcomes.items():
                if outcome.flags:
                    continue
                if cid in cached:
                    _apply_judge(outcome, config, cached[cid][0], cached[cid][1], "", judge_key)
                else:
                    outcome.awaiting_judge = True
        else:
            run.message = "The judge's teacher no longer exists; judge skipped."

    progress.update(message="Saving verdicts.", force=True)
    _save(project, outcomes)

    waiting = [cid for cid, o in outcomes.items() if o.awaiting_judge]
    if waiting and teacher is not None:
        _run_judge(project, config, teacher, judge_key, waiting, rows, outcomes, progress)

    counts = _counts(outcomes)
    FilterRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
        heartbeat_at=timezone.now(),
        done=progress.total,
        total=progress.total,
        counts=counts,
        message=(
            f"Checked {counts['total']} completions: {counts['passed']} passed, {counts['filtered']} filtered out."
            + (f" {run.message}" if "judge skipped" in run.message else "")
        ),
    )


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


def _mark_duplicates(
    project: Project, config: FilterConfig, outcomes: dict[int, _Outcome], *, job_id: int | None
) -> None:
    """Group duplicates over all OK completions of the project and flag all but one per group.

    The kept one is, in order of preference: a completion outside this run that is already kept
    (passed, restored or awaiting the judge), then one of this run with no other flag or outside
    it and not checked yet, then any; ties go to the lowest id. Only completions of this run get
    new verdicts.
    """
    from distillapp.generation.models import Completion, CompletionStatus

    pairs = list(
        Completion.objects.filter(job__project=project, status=CompletionStatus.OK)
        .order_by("id")
        .values_list("id", "text")
    )
    pairs = [(cid, text) for cid, text in pairs if text.strip()]
    ids = [cid for cid, _ in pairs]
    texts = [text for _, text in pairs]
    outside_state: dict[int, str] = {}
    if job_id is not None:
        outside_state = dict(
            CompletionVerdict.objects.filter(project=project)
            .exclude(completion__job_id=job_id)
            .values_list("completion_id", "state")
        )

    def rank(i: int) -> tuple[int, int]:
        cid = ids[i]
        if cid in outcomes:
            return (1 if not outcomes[cid].flags else 2, cid)
        state = outside_state.get(cid)
        if state is None:
            # Not checked yet (e.g. another job's run in progress): ranked like this run's clean
            # ones, by id, so two concurrent runs pick the same keeper.
            return (1, cid)
        return (0 if state in _KEPT_STATES else 2, cid)

    rep_of: dict[int, int] = {}
    if config.is_enabled(C.EXACT_DUPLICATE):
        for group in dedup.exact_duplicate_groups(texts):
            keeper = min(group, key=rank)
            rep_of.update({m: keeper for m in group if m != keeper})
    near_of: dict[int, int] = {}
    if config.is_enabled(C.NEAR_DUPLICATE):
        reps = [i for i in range(len(texts)) if i not in rep_of]
        for group in dedup.near_duplicate_groups(
            [texts[i] for i in reps], threshold=config.dedup_threshold
        ):
            members = [reps[x] for x in group]
            keeper = min(members, key=rank)
            near_of.update({m: keeper for m in members if m != keeper})

    for i, cid in enumerate(ids):
        outcome = outcomes.get(cid)
        if outcome is None:
            continue
        if i in rep_of:
            first = rep_of[i]
            final = near_of.get(first, first)
            outcome.duplicate_of = ids[final]
            outcome.fail(
                C.EXACT_DUPLICATE, f"Identical to completion #{ids[first]}; #{ids[final]} is kept."
            )
        elif i in near_of:
            final = near_of[i]
            similarity = dedup.jaccard(texts[i], texts[final])
            outcome.duplicate_of = ids[final]
            outcome.fail(
                C.NEAR_DUPLICATE,
                f"Near-duplicate of completion #{ids[final]}, which is kept "
                f"(Jaccard {similarity:.2f}; threshold {config.dedup_threshold:.2f}).",
            )


def _scope_verdicts(project: Project, job_id: int | None) -> Any:
    qs = CompletionVerdict.objects.filter(project=project)
    return qs.filter(completion__job_id=job_id) if job_id else qs


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
) -> None:
    outcome.awaiting_judge = False
    if error:
        outcome.judge_score, outcome.judge_rationale, outcome.judge_key = None, "", ""
        outcome.reasons[C.JUDGE] = f"The judge failed, so no score: {error}"
        return
    outcome.judge_score, outcome.judge_rationale, outcome.judge_key = score, rationale, key
    assert score is not None
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
    waiting: list[int],
    rows: list[tuple[Any, ...]],
    outcomes: dict[int, _Outcome],
    progress: _Progress,
) -> None:
    from workers.judge import JudgeItem, JudgeResult, client_for_teacher

    texts = {row[0]: (row[3] or "", row[1]) for row in rows}
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
        outcome = outcomes[result.key]
        _apply_judge(outcome, config, result.score, result.rationale, result.error, judge_key)
        pending[result.key] = outcome
        finished += 1
        if len(pending) >= 100:
            _save(project, dict(pending))
            pending.clear()
        progress.update(done=base + finished)

    try:
        # Chunks keep memory flat and let results reach the database while the rest is judged.
        for start in range(0, len(waiting), 500):
            chunk = waiting[start : start + 500]
            client.judge_many(
                [JudgeItem(cid, texts[cid][0], texts[cid][1]) for cid in chunk], on_result=on_result
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
                    "duplicate_of",
                    "updated_at",
                ],
            )


def _counts(outcomes: dict[int, _Outcome]) -> dict[str, Any]:
    by_flag: dict[str, int] = {}
    filtered = 0
    for o in outcomes.values():
        if o.flags:
            filtered += 1
        for f in o.flags:
            by_flag[f] = by_flag.get(f, 0) + 1
    return {
        "total": len(outcomes),
        "filtered": filtered,
        "passed": len(outcomes) - filtered,
        "by_flag": by_flag,
    }


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
