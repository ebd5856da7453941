"""The filter pipeline of one run: stream the scope's completions in batches, run the
per-completion filters, find exact and near duplicates over the whole project, reuse or ask for
judge scores, and upsert one verdict per completion.

Memory is one batch's, whatever the number of completions: what must be kept across batches (the
duplicate search's per-completion state, the ids of the completions that passed so far and of
those waiting for the judge) is in the run's scratch SQLite file (`run_scratch`), deleted when
the run ends, succeeded, failed or cancelled, or by the next run when a worker was killed."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from django.db.models import QuerySet

from distillapp.core.runs.services import run_end
from distillapp.filters import config as C
from distillapp.filters import dedup_store
from distillapp.filters.config import FilterConfig
from distillapp.filters.dedup_store import DedupStore, Found
from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus, VerdictState
from distillapp.filters.scratch import IdSpool, ScratchDB
from distillapp.filters.selectors import filter_config_for_project
from distillapp.filters.services.checks import NO_PROMPT, Checks, prompts_of, rows_by_id
from distillapp.filters.services.judging import apply_cached_judge, judge_teacher, run_judge
from distillapp.filters.services.outcomes import Outcome, Progress, Tally
from distillapp.filters.services.run_scratch import run_scratch
from distillapp.filters.services.verdict_rows import PASSED_ROW, save_outcomes, write_verdicts

logger = logging.getLogger(__name__)

# Completions read at once, and verdicts decided at once.
_BATCH = 2000
_KEPT_STATES = (VerdictState.PASSED, VerdictState.RESTORED, VerdictState.PENDING)


def _batches(
    qs: QuerySet[Any], fields: tuple[str, ...], size: int = _BATCH
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
    """Run the pipeline with a new scratch database, deleted however the run ends. Idempotent:
    a re-run (or a takeover after a killed worker) starts from nothing and upserts the same
    verdicts."""
    with run_scratch(run, token) as scratch:
        _run_pipeline(run, token, scratch)


def _run_pipeline(run: FilterRun, token: str, scratch: ScratchDB) -> None:
    """Stream the scope in batches: per-completion filters (verdicts of failures saved per batch),
    then duplicates over the whole project, then the verdicts of the rest, then the judge."""
    from distillapp.generation.models import Completion, CompletionStatus

    project = run.project
    config = filter_config_for_project(project=project)
    progress = Progress(run, token)
    ok = Completion.objects.filter(job__project=project, status=CompletionStatus.OK)
    scope = ok.filter(job_id=run.job_id) if run.job_id else ok
    total = scope.count()
    tally = Tally(total=total)
    progress.update(message=f"Checking {total} completions.", done=0, total=total, force=True)

    store: DedupStore | None = None
    if config.is_enabled(C.EXACT_DUPLICATE) or config.is_enabled(C.NEAR_DUPLICATE):
        store = DedupStore(
            scratch,
            exact=config.is_enabled(C.EXACT_DUPLICATE),
            near=config.is_enabled(C.NEAR_DUPLICATE),
            threshold=config.dedup_threshold,
            within_group=config.dedup_within_prompt,
            capacity=ok.count() if run.job_id else total,
        )
    # The scope's completions that failed no filter yet: their verdicts are written once the
    # duplicates are known.
    clean = IdSpool(scratch, "clean")
    done = 0
    checks = Checks(config)
    for rows in _batches(scope, ("prompt_id", "text", "finish_reason")):
        prompts = prompts_of(rows, checks)
        flagged: dict[int, Outcome] = {}
        ranks = []
        for cid, pid, text, finish_reason in rows:
            outcome = checks.run(text, finish_reason, prompts.get(pid, NO_PROMPT))
            if outcome is not None:
                flagged[cid] = outcome
                tally.add(outcome)
                ranks.append(dedup_store.RANK_OTHER)
            else:
                ranks.append(dedup_store.RANK_CLEAN)
        clean.extend(r[0] for r in rows if r[0] not in flagged)
        if store is not None:
            store.add(
                [r[0] for r in rows],
                [r[1] for r in rows],
                ranks,
                [r[2] for r in rows],
                in_scope=True,
            )
        # A failure is final whatever the duplicates: saved now, so memory holds one batch.
        save_outcomes(project.pk, flagged)
        done += len(rows)
        progress.update(done=done)

    if store is not None:
        progress.update(done=done, message="Looking for duplicates.", force=True)
        if run.job_id:
            # The rest of the project, ranked by its verdicts, so a later job's copy of an
            # earlier answer is caught and the earlier one kept.
            outside = ok.exclude(job_id=run.job_id)
            for rows in _batches(outside, ("prompt_id", "text", "verdict__state")):
                store.add(
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [_outside_rank(r[3]) for r in rows],
                    [r[2] for r in rows],
                    in_scope=False,
                )
                progress.update()
        store.resolve(_fetch_texts, on_progress=progress.update)

    judge_key = ""
    teacher = None
    if config.is_enabled(C.JUDGE):
        teacher, judge_key = judge_teacher(project, config)
        if teacher is None:
            run.message = "The judge's teacher no longer exists; judge skipped."

    progress.update(message="Saving verdicts.", force=True)
    if store is not None:
        _flag_failed_duplicates(project.pk, store, config, tally)
    waiting = IdSpool(scratch, "waiting")
    for batch in clean.chunks(_BATCH):
        found = store.lookup(batch) if store is not None else {}
        if teacher is None:
            # Most verdicts: passed, nothing to say. Written as plain rows, no object each.
            write_verdicts(project.pk, [(cid, *PASSED_ROW) for cid in batch if cid not in found])
            outcomes = {cid: Outcome() for cid in batch if cid in found}
        else:
            outcomes = {cid: Outcome() for cid in batch}
        for cid, outcome in outcomes.items():
            _mark_duplicate(outcome, found.get(cid), config)
        if teacher is not None:
            apply_cached_judge(outcomes, config, judge_key)
        save_outcomes(project.pk, outcomes)
        for outcome in outcomes.values():
            if not outcome.awaiting_judge:
                tally.add(outcome)  # the others are counted once judged
        waiting.extend(cid for cid, o in outcomes.items() if o.awaiting_judge)
        progress.update()

    if len(waiting) and teacher is not None:
        run_judge(project, config, teacher, judge_key, waiting, tally, progress)

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
        return dedup_store.RANK_CLEAN
    return dedup_store.RANK_KEPT if state in _KEPT_STATES else dedup_store.RANK_OTHER


def _fetch_texts(ids: Sequence[int]) -> dict[int, str]:
    from distillapp.generation.models import Completion

    return dict(rows_by_id(Completion, ("id", "text"), list(ids)))


def _mark_duplicate(outcome: Outcome, found: Found | None, config: FilterConfig) -> None:
    if found is None:
        return
    outcome.duplicate_of = found.keeper
    if found.kind == dedup_store.EXACT:
        outcome.fail(
            C.EXACT_DUPLICATE, f"Identical to completion #{found.first}; #{found.keeper} is kept."
        )
    else:
        outcome.fail(
            C.NEAR_DUPLICATE,
            f"Near-duplicate of completion #{found.keeper}, which is kept "
            f"(Jaccard {found.similarity:.2f}; threshold {config.dedup_threshold:.2f}).",
        )


def _flag_failed_duplicates(
    project_id: int, store: DedupStore, config: FilterConfig, tally: Tally
) -> None:
    """Add the duplicate flag to completions of the run that failed another filter (their
    verdicts were saved in the first pass), a batch at a time."""
    for chunk in store.duplicates(_BATCH, in_scope=True, rank=dedup_store.RANK_OTHER):
        found = dict(chunk)
        outcomes: dict[int, Outcome] = {}
        for cid, flags, reasons in CompletionVerdict.objects.filter(
            completion_id__in=list(found)
        ).values_list("completion_id", "flags", "reasons"):
            outcome = Outcome(flags=list(flags or []), reasons=dict(reasons or {}))
            before = len(outcome.flags)
            _mark_duplicate(outcome, found[cid], config)
            for name in outcome.flags[before:]:
                tally.flag(name)
            outcomes[cid] = outcome
        save_outcomes(project_id, outcomes)
