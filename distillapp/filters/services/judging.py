"""The LLM judge of a filter run: which teacher judges, scores reused from the same judge, and
the calls for the completions still waiting, in chunks."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from distillapp.filters import config as C
from distillapp.filters.config import FilterConfig
from distillapp.filters.models import CompletionVerdict
from distillapp.filters.scratch import IdSpool
from distillapp.filters.services.outcomes import Outcome, Progress, Tally
from distillapp.filters.services.verdict_rows import save_outcomes
from distillapp.projects.models import Project

# Completions judged per call of the client (their texts are read a chunk at a time).
_JUDGE_CHUNK = 500


def judge_teacher(project: Project, config: FilterConfig) -> tuple[Any, str]:
    """The judging teacher and the key of its scores, or (None, "") when there is none."""
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


def apply_cached_judge(outcomes: dict[int, Outcome], config: FilterConfig, judge_key: str) -> None:
    """Scores the same judge already gave are reused; the other clean completions wait."""
    clean = [cid for cid, o in outcomes.items() if not o.flags]
    cached = CompletionVerdict.objects.filter(
        completion_id__in=clean, judge_key=judge_key, judge_score__isnull=False
    ).values_list("completion_id", "judge_score", "judge_rationale")
    for cid, score, rationale in cached:
        apply_judge(outcomes[cid], config, score, rationale, "", judge_key)
    for cid in clean:
        if not outcomes[cid].judge_key:
            outcomes[cid].awaiting_judge = True


def apply_judge(
    outcome: Outcome,
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


def run_judge(
    project: Project,
    config: FilterConfig,
    teacher: Any,
    judge_key: str,
    waiting: IdSpool,
    tally: Tally,
    progress: Progress,
) -> None:
    """Judge the completions in `waiting` (ids, read back a chunk at a time); results are saved
    every 100."""
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
    pending: dict[int, Outcome] = {}
    finished = 0

    def on_result(result: JudgeResult) -> None:
        nonlocal finished
        outcome = Outcome()
        apply_judge(
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
            save_outcomes(project.pk, dict(pending))
            pending.clear()
        progress.update(done=base + finished)

    try:
        # Chunks keep memory flat and let results reach the database while the rest is judged.
        for chunk in waiting.chunks(_JUDGE_CHUNK):
            rows = Completion.objects.filter(id__in=chunk).values_list("id", "prompt__text", "text")
            client.judge_many(
                [JudgeItem(cid, prompt or "", text) for cid, prompt, text in rows],
                on_result=on_result,
            )
    finally:
        client.close()
        if pending:
            save_outcomes(project.pk, dict(pending))
    progress.update(done=base + finished, force=True)
