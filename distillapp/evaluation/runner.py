"""The worker side of an eval run: claim it, answer every (model, item) still missing through
the generation engine's paths (openai_runner for API teachers, with the outbound guard;
generate_local for local models, a LoRA adapter through peft), judge every answer against the
baseline in both orders, score, finish. Called by the thin task workers.tasks.evaluation.run_eval.

Resumable: answers and judgements are upserts on (run, model, item), and each stage does only
what is missing, so a resumed, re-delivered or taken-over run never repeats finished work.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections, connections

from distillapp.core.outbound import outbound_policy
from distillapp.core.paths import ModelPathRefused, check_model_path
from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.services import (
    ClaimLost,
    ClaimState,
    run_claim,
    run_end,
    run_fail,
    run_heartbeat,
)
from distillapp.evaluation.models import EvalAnswer, EvalItem, EvalJudgement, EvalRun
from distillapp.evaluation.run_services import (
    AnswerIn,
    eval_answers_batch_time,
    eval_answers_write,
    eval_judgements_write,
)
from distillapp.evaluation.scoring import eval_run_score, run_items
from distillapp.generation.models import Teacher

logger = logging.getLogger(__name__)
T = TypeVar("T")
JUDGE_CHUNK = 16


class _Stop(Exception):
    """The run was asked to cancel."""


class _DbThread:
    """Every database call of the asyncio runner goes to one thread with its own connection."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-db")

    async def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, **kwargs))

    def close(self) -> None:
        self.pool.submit(connections.close_all).result()
        self.pool.shutdown(wait=True)


class _Progress:
    def __init__(self, run: EvalRun, token: str, total: int) -> None:
        self.run, self.token, self.total = run, token, total

    def beat(self, *, stage: str, message: str = "") -> bool:
        """Heartbeat with progress; False when the run is being cancelled."""
        done = EvalAnswer.objects.filter(run=self.run, ok=True).count()
        done += EvalJudgement.objects.filter(run=self.run, outcome__isnull=False).count()
        status = run_heartbeat(
            EvalRun,
            pk=self.run.pk,
            token=self.token,
            done=min(done, self.total),
            total=self.total,
            stage=stage,
            message=message,
        )
        return status == RunStatus.RUNNING


def _pending(run: EvalRun, key: str, items: list[EvalItem]) -> list[EvalItem]:
    done = set(
        EvalAnswer.objects.filter(run=run, model_key=key, ok=True).values_list("item_id", flat=True)
    )
    return [i for i in items if i.pk not in done]


def _decoding(run: EvalRun, spec: dict[str, Any]) -> dict[str, Any]:
    return {**run.decoding, **(spec.get("decoding") or {})}


def _answer_api(
    run: EvalRun, token: str, spec: dict[str, Any], items: list[EvalItem], progress: _Progress
) -> bool:
    """Answer `items` with an API model in two phases. The first EVAL_BATCH1_REQUESTS prompts go
    one at a time: their latency is what one user waits, their tokens/s the batch-1 speed. The rest
    go at the teacher's concurrency; that phase's wall time gives the batched throughput. A
    resumed run keeps the batch-1 answers it already has."""
    key = spec["key"]
    single_done = EvalAnswer.objects.filter(run=run, model_key=key, ok=True, batch_size=1).count()
    first = max(0, int(settings.EVAL_BATCH1_REQUESTS) - single_done)
    single, rest = items[:first], items[first:]
    if single and not _api_phase(run, token, spec, single, progress, concurrency=1):
        return False
    if not rest:
        return True
    concurrency = min(int(spec.get("concurrency") or 16), len(rest))
    started = time.perf_counter()
    if not _api_phase(run, token, spec, rest, progress, concurrency=concurrency):
        return False
    eval_answers_batch_time(
        run_id=run.pk,
        token=token,
        model_key=key,
        item_ids=[i.pk for i in rest],
        wall_ms=int((time.perf_counter() - started) * 1000),
    )
    return True


def _api_phase(
    run: EvalRun,
    token: str,
    spec: dict[str, Any],
    items: list[EvalItem],
    progress: _Progress,
    *,
    concurrency: int,
) -> bool:
    from workers.engine.teachers.openai_runner import (
        Decoding,
        ItemResult,
        RunnerConfig,
        WorkItem,
        run_openai,
    )

    teacher = Teacher.objects.filter(pk=int(spec.get("teacher_id") or 0)).first()
    from distillapp.generation.services import teacher_api_key

    config = RunnerConfig(
        base_url=spec["base_url"],
        model=spec["model"],
        api_key=teacher_api_key(teacher) if teacher is not None else "",
        concurrency=concurrency,
        requests_per_minute=spec.get("requests_per_minute"),
        tokens_per_minute=spec.get("tokens_per_minute"),
        timeout=float(settings.TEACHER_REQUEST_TIMEOUT),
        max_attempts=int(settings.TEACHER_MAX_ATTEMPTS),
        price_input_per_m=Decimal(spec.get("price_input_per_m") or 0),
        price_output_per_m=Decimal(spec.get("price_output_per_m") or 0),
        decoding=Decoding.from_dict(_decoding(run, spec)),
        backoff_base=float(settings.TEACHER_BACKOFF_BASE),
        backoff_cap=float(settings.TEACHER_BACKOFF_CAP),
        outbound=outbound_policy(),
        flush_every=16,
    )
    db = _DbThread()
    key = spec["key"]

    async def work() -> Any:
        async def feed() -> AsyncIterator[WorkItem]:
            for item in items:
                yield WorkItem(prompt_id=item.pk, sample_index=0, messages=item.chat)

        async def sink(batch: list[ItemResult]) -> None:
            rows = [
                AnswerIn(
                    item_id=r.prompt_id,
                    ok=r.ok,
                    text=r.text,
                    error=r.error,
                    finish_reason=r.finish_reason,
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    latency_ms=r.latency_ms,
                    # Concurrent answers get their share of the phase's wall time at its end.
                    batch_size=concurrency,
                    cost_usd=r.cost_usd,
                )
                for r in batch
            ]
            await db.call(
                eval_answers_write, run_id=run.pk, token=token, model_key=key, answers=rows
            )

        async def control() -> bool:
            return await db.call(
                progress.beat, stage="answer", message=f"Answering: {spec['label']}"
            )

        return await run_openai(feed(), config, sink=sink, control=control)

    try:
        summary = asyncio.run(work())
    finally:
        db.close()
    close_old_connections()
    if summary.fatal_error:
        logger.warning("eval run %s: %s stopped: %s", run.pk, key, summary.fatal_error)
    return summary.outcome.value != "stopped"


def _answer_local(
    run: EvalRun, token: str, spec: dict[str, Any], items: list[EvalItem], progress: _Progress
) -> bool:
    from workers.engine import generate_local as gl
    from workers.engine.evaluation import local

    key = spec["key"]
    try:
        for path in filter(None, (spec.get("path"), spec.get("adapter"))):
            check_model_path(path, org_id=run.project.org_id)
    except ModelPathRefused as exc:
        eval_answers_write(
            run_id=run.pk,
            token=token,
            model_key=key,
            answers=[AnswerIn(item_id=i.pk, ok=False, error=str(exc)) for i in items],
        )
        return True
    lm = local.load_model(
        spec["path"],
        adapter=spec.get("adapter") or "",
        device=spec.get("device") or "auto",
        dtype=spec.get("dtype") or "auto",
    )

    def on_batch(results: list[local.EvalLocalResult]) -> None:
        eval_answers_write(
            run_id=run.pk,
            token=token,
            model_key=key,
            answers=[
                AnswerIn(
                    item_id=r.key,
                    ok=True,
                    text=r.text,
                    finish_reason=r.finish_reason,
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    latency_ms=r.latency_ms,
                    batch_size=r.batch_size,
                    batch_ms=r.batch_ms,
                )
                for r in results
            ],
        )

    # Batch-1 measurements come from the first prompts answered; a resumed run that already
    # has some keeps them and answers the rest in batches.
    single_done = EvalAnswer.objects.filter(run=run, model_key=key, ok=True, batch_size=1).count()
    return local.answer_all(
        lm,
        (gl.LocalRequest(key=i.pk, messages=i.chat) for i in items),
        gl.LocalSettings.from_decoding(_decoding(run, spec)),
        batch_size=int(spec.get("batch_size") or 16),
        batch1_count=max(0, int(settings.EVAL_BATCH1_REQUESTS) - single_done),
        on_batch=on_batch,
        should_stop=lambda: (
            not progress.beat(stage="answer", message=f"Answering: {spec['label']}")
        ),
    )


def _judge(run: EvalRun, token: str, items: list[EvalItem], progress: _Progress) -> bool:
    from workers.engine.evaluation.pairwise import PairItem, PairwiseJudgeClient

    spec = run.judge
    teacher = Teacher.objects.filter(pk=int(spec.get("teacher_id") or 0)).first()
    from distillapp.generation.services import teacher_api_key

    client = PairwiseJudgeClient(
        base_url=spec["base_url"],
        api_key=teacher_api_key(teacher) if teacher is not None else "",
        model=spec["model"],
        criteria=spec.get("criteria") or "",
        concurrency=int(spec.get("concurrency") or 4),
        timeout=float(settings.FILTERS_JUDGE_TIMEOUT),
        outbound=outbound_policy(),
    )
    by_id = {i.pk: i for i in items}
    baseline = dict(
        EvalAnswer.objects.filter(run=run, model_key=run.baseline_key, ok=True).values_list(
            "item_id", "text"
        )
    )
    try:
        for spec_ in run.model_specs:
            key = spec_["key"]
            if key == run.baseline_key:
                continue
            judged = set(
                EvalJudgement.objects.filter(
                    run=run, model_key=key, outcome__isnull=False
                ).values_list("item_id", flat=True)
            )
            answers = EvalAnswer.objects.filter(run=run, model_key=key, ok=True).values_list(
                "item_id", "text"
            )
            pairs = [
                PairItem(
                    key=item_id,
                    prompt=by_id[item_id].text,
                    candidate=text,
                    baseline=baseline[item_id],
                )
                for item_id, text in answers
                if item_id in baseline and item_id in by_id and item_id not in judged
            ]
            pairs.sort(key=lambda p: p.key)
            for start in range(0, len(pairs), JUDGE_CHUNK):
                if not progress.beat(stage="judge", message=f"Judging: {spec_['label']}"):
                    return False
                outcomes = client.judge_pairs(pairs[start : start + JUDGE_CHUNK])
                eval_judgements_write(
                    run_id=run.pk,
                    token=token,
                    rows=[
                        EvalJudgement(
                            run_id=run.pk,
                            model_key=key,
                            item_id=o.key,
                            candidate_first=o.candidate_first.verdict or "",
                            baseline_first=o.baseline_first.verdict or "",
                            rationale_candidate_first=o.candidate_first.rationale,
                            rationale_baseline_first=o.baseline_first.rationale,
                            error="; ".join(
                                e for e in (o.candidate_first.error, o.baseline_first.error) if e
                            )[:4000],
                            outcome=o.outcome,
                        )
                        for o in outcomes
                    ],
                )
    finally:
        client.client.close()
    return True


def eval_run_execute(*, run_id: int) -> str:
    """Claim the run and take it to the end (or until cancelled, or the claim is lost).

    Idempotent: a second delivery while a live worker runs it returns "busy"; an ended run
    "ended"; a run whose worker died is taken over and only what is missing is done."""
    claim = run_claim(EvalRun, pk=run_id)
    if claim.state != ClaimState.CLAIMED:
        return claim.state.value
    run, token = claim.run, claim.token
    assert run is not None
    try:
        items = run_items(run)
        specs = run.model_specs
        total = len(items) * len(specs)
        if run.judge:
            total += len(items) * (len(specs) - 1)
        progress = _Progress(run, token, total)
        finished = True
        for spec in specs:
            if not progress.beat(stage="answer", message=f"Answering: {spec['label']}"):
                finished = False
                break
            pending = _pending(run, spec["key"], items)
            if not pending:
                continue
            answer = _answer_api if spec.get("kind") == "api" else _answer_local
            if not answer(run, token, spec, pending, progress):
                finished = False
                break
        if finished and run.judge and run.baseline_key:
            finished = _judge(run, token, items, progress)
        if not finished:
            run_end(
                EvalRun, pk=run.pk, token=token, status=RunStatus.CANCELLED, message="Cancelled."
            )
            return "cancelled"
        progress.beat(stage="score", message="Scoring")
        results = eval_run_score(run)
        failed = EvalAnswer.objects.filter(run=run, ok=False).count()
        message = f"{failed} answers failed; resume to retry them." if failed else ""
        run_end(
            EvalRun,
            pk=run.pk,
            token=token,
            status=RunStatus.SUCCEEDED,
            message=message,
            results=results,
            stage="done",
            done=total,
        )
    except ClaimLost:
        logger.warning("eval run %s: another worker took it over; this run stops.", run_id)
        return "lost"
    except Exception as exc:
        logger.exception("eval run %s crashed", run_id)
        close_old_connections()
        run_fail(
            EvalRun,
            pk=run_id,
            token=token,
            message=f"The worker stopped: {type(exc).__name__}: {exc}",
        )
        return "failed"
    return "succeeded"
