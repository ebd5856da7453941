"""Writes of a generation job's worker: claim, heartbeat, results, finish.

Built on the shared run lifecycle (`distillapp.core.runs.services`): every write of a worker is
conditional on its claim token, so a worker that lost the job (stale heartbeat, taken over) writes
nothing. Counters are recomputed from the completion rows at claim and finish, never only added to.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.registry import notify_succeeded
from distillapp.core.runs.services import (
    Claim,
    ClaimLost,
    ClaimState,
    run_claim,
    run_end,
    run_fail,
    run_heartbeat,
)
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob, JobStatus
from distillapp.prompts.selectors import prompts_for_generation

if TYPE_CHECKING:
    from workers.engine.teachers.openai_runner import ItemResult

__all__ = ["Claim", "ClaimLost", "ClaimState"]


def generation_job_claim(*, job_id: int, stale_after: float | None = None) -> Claim[GenerationJob]:
    """Take a job for this worker run: queued → running, or take over a running job whose
    worker stopped heart-beating. A cancelling job with a dead worker becomes cancelled."""
    now = timezone.now()
    claim = run_claim(GenerationJob, pk=job_id, stale_after=stale_after, run_started_at=now)
    if claim.state == ClaimState.CLAIMED:
        job = claim.run
        assert job is not None
        counts = _refresh_counts(job.pk)
        GenerationJob.objects.filter(pk=job.pk, claim_token=claim.token).update(
            run_start_count=counts["done"] + counts["failed"], total=_job_total(job)
        )
        job.refresh_from_db()
        claim.run = GenerationJob.objects.select_related("teacher").get(pk=job.pk)
    return claim


def _job_total(job: GenerationJob) -> int:
    f = job.prompt_filter or {}
    return (
        prompts_for_generation(
            prompt_set=job.prompt_set, q=f.get("q"), metadata=f.get("metadata")
        ).count()
        * job.samples_per_prompt
    )


def generation_job_heartbeat(*, job_id: int, token: str) -> str | None:
    """Prove the run is alive. Returns the job's status, or None when this run lost its claim."""
    try:
        return run_heartbeat(GenerationJob, pk=job_id, token=token)
    except ClaimLost:
        return None


def generation_job_set_fingerprint(*, job_id: int, token: str, fingerprint: str) -> None:
    """Record the weights' fingerprint the first time a worker sees them (web host may not)."""
    job = GenerationJob.objects.get(pk=job_id, claim_token=token)
    snapshot = dict(job.teacher_snapshot)
    snapshot["fingerprint"] = fingerprint
    GenerationJob.objects.filter(pk=job_id, claim_token=token).update(teacher_snapshot=snapshot)


_UPDATE_FIELDS = [
    "status",
    "text",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "cost_usd",
    "topk",
    "mean_logprob",
    "error",
    "attempts",
]


def _refresh_counts(job_id: int) -> dict[str, Any]:
    agg = Completion.objects.filter(job_id=job_id).aggregate(
        done=Count("id", filter=Q(status=CompletionStatus.OK)),
        failed=Count("id", filter=Q(status=CompletionStatus.FAILED)),
        prompt_tokens=Sum("prompt_tokens", filter=Q(status=CompletionStatus.OK)),
        completion_tokens=Sum("completion_tokens", filter=Q(status=CompletionStatus.OK)),
        cost_usd=Sum("cost_usd"),
    )
    counts = {
        "done": agg["done"] or 0,
        "failed": agg["failed"] or 0,
        "prompt_tokens": agg["prompt_tokens"] or 0,
        "completion_tokens": agg["completion_tokens"] or 0,
        "cost_usd": (agg["cost_usd"] or Decimal(0)).quantize(Decimal("0.000001")),
    }
    GenerationJob.objects.filter(pk=job_id).update(**counts)
    return counts


def generation_job_write_results(*, job_id: int, token: str, results: list[ItemResult]) -> None:
    """Upsert a batch of results, idempotent on (job, prompt, sample index), and move the counters.

    The counters move by the difference between the rows before and after the upsert (read under
    the job's row lock that also proves the claim), so writing the same batch twice changes
    nothing; `_refresh_counts` recomputes them from all rows at claim and finish.
    Raises ClaimLost (writing nothing) when another run took the job over. A failed result never
    replaces a completion that succeeded.
    """
    if not results:
        return
    with transaction.atomic():
        # Row lock on the job (PostgreSQL) serialises writers and proves the claim in one step.
        if not GenerationJob.objects.filter(pk=job_id, claim_token=token).update(
            heartbeat_at=timezone.now()
        ):
            raise ClaimLost(job_id)
        by_key = {(r.prompt_id, r.sample_index): r for r in results}
        before = {
            (row[0], row[1]): row[2:]
            for row in Completion.objects.filter(
                job_id=job_id, prompt_id__in={k[0] for k in by_key}
            ).values_list(
                "prompt_id",
                "sample_index",
                "status",
                "prompt_tokens",
                "completion_tokens",
                "cost_usd",
            )
            if (row[0], row[1]) in by_key
        }
        rows = []
        delta: dict[str, Any] = {
            "done": 0,
            "failed": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": Decimal(0),
        }
        for key, r in by_key.items():
            old = before.get(key)
            if not r.ok and old is not None and old[0] == CompletionStatus.OK:
                continue
            if old is not None:
                _count(delta, old[0], old[1], old[2], old[3], sign=-1)
            status = CompletionStatus.OK if r.ok else CompletionStatus.FAILED
            _count(delta, status, r.prompt_tokens, r.completion_tokens, r.cost_usd, sign=1)
            rows.append(
                Completion(
                    job_id=job_id,
                    prompt_id=r.prompt_id,
                    sample_index=r.sample_index,
                    status=status,
                    text=r.text,
                    finish_reason=r.finish_reason[:32],
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    latency_ms=r.latency_ms,
                    cost_usd=r.cost_usd,
                    topk=r.topk,
                    mean_logprob=r.mean_logprob,
                    error=r.error,
                    attempts=r.attempts,
                )
            )
        Completion.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["job", "prompt", "sample_index"],
            update_fields=_UPDATE_FIELDS,
        )
        GenerationJob.objects.filter(pk=job_id).update(
            **{k: F(k) + v for k, v in delta.items() if v}
        )


def _count(
    delta: dict[str, Any],
    status: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: Decimal,
    *,
    sign: int,
) -> None:
    delta["done" if status == CompletionStatus.OK else "failed"] += sign
    delta["cost_usd"] += sign * Decimal(cost or 0)
    if status == CompletionStatus.OK:
        delta["prompt_tokens"] += sign * prompt_tokens
        delta["completion_tokens"] += sign * completion_tokens


def generation_job_finish(
    *, job_id: int, token: str, outcome: str, fatal_error: str = ""
) -> GenerationJob:
    """End this run: cancelled (if asked), failed (fatal error or every item failed) or succeeded.

    A successful job (also one with some failed items) tells the apps that follow it
    (`notify_succeeded`: the filters app starts its automatic run).
    `outcome` is the runner's: completed, stopped or aborted.
    """
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().filter(pk=job_id, claim_token=token).first()
        if job is None:
            raise ClaimLost(job_id)
        counts = _refresh_counts(job_id)
        done, failed = counts["done"], counts["failed"]
        if job.status == JobStatus.CANCELLING or (outcome == "stopped" and not fatal_error):
            status, message = RunStatus.CANCELLED, f"Cancelled with {done} of {job.total} done."
        elif fatal_error:
            status, message = RunStatus.FAILED, f"Stopped: {fatal_error}"
        elif done == 0 and failed > 0:
            status, message = RunStatus.FAILED, f"All {failed} items failed; see the errors below."
        else:
            missing = max(0, job.total - done - failed)
            status = RunStatus.SUCCEEDED
            parts = [
                f"{failed} item{'s' if failed != 1 else ''} failed" if failed else "",
                f"{missing} not sent" if missing else "",
            ]
            message = "; ".join(p for p in parts if p)
        run_end(
            GenerationJob,
            pk=job_id,
            token=token,
            status=status,
            message=message,
            retry_failed=False,
        )
        if status == RunStatus.SUCCEEDED and done > 0:
            notify_succeeded(job)
    job.refresh_from_db()
    return job


def generation_job_fail(*, job_id: int, token: str, message: str) -> None:
    """A run crashed on something other than a teacher error (a bug, the database): resumable."""
    _refresh_counts(job_id)
    run_fail(GenerationJob, pk=job_id, token=token, message=message[:2000])
