"""Runs a generation job of a local (`hf_local`) teacher on a GPU worker: claim, load the model,
generate in batches, write each batch, check for cancel between batches, finish. One thread."""

from __future__ import annotations

import logging
import types
from decimal import Decimal

from distillapp.core.paths import ModelPathRefused, check_model_path
from distillapp.generation import selectors, services
from distillapp.generation.models import GenerationJob, JobStatus
from workers.engine.teachers.openai_runner import ItemResult, RunOutcome

logger = logging.getLogger(__name__)

PAGE_SIZE = 500


def _results(batch: list) -> list[ItemResult]:
    out = []
    for r in batch:
        prompt_id, sample_index = r.key
        blob, mean = r.topk_blob()
        out.append(
            ItemResult(
                prompt_id=prompt_id,
                sample_index=sample_index,
                ok=True,
                text=r.text,
                finish_reason=r.finish_reason,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                latency_ms=r.latency_ms,
                cost_usd=Decimal(0),
                topk=blob,
                mean_logprob=mean,
                attempts=1,
            )
        )
    return out


def run_local_job(job_id: int) -> str:
    """Claim and run a local-teacher job; safe to call twice (see run_api_job)."""
    from workers.engine import generate_local

    claim = services.generation_job_claim(job_id=job_id)
    if claim.state != services.ClaimState.CLAIMED:
        return claim.state.value
    job, token = claim.run, claim.token
    assert job is not None
    snap = job.teacher_snapshot
    outcome, fatal = RunOutcome.COMPLETED, ""
    try:
        try:
            # The path was checked when saved; check again where it loads (roots can change).
            check_model_path(snap["model_path"], org_id=job.project.org_id)
        except ModelPathRefused as exc:
            fatal, fingerprint = str(exc), ""
        else:
            fingerprint = generate_local.model_fingerprint(snap["model_path"])
        if fatal:
            pass
        elif not fingerprint:
            fatal = f"No model with config.json and tokenizer files in {snap['model_path']} on this worker."
        elif not snap.get("fingerprint"):
            services.generation_job_set_fingerprint(
                job_id=job_id, token=token, fingerprint=fingerprint
            )
        elif snap["fingerprint"] != fingerprint:
            fatal = (
                "The model's config or tokenizer changed since the job started; start a new job."
            )
        outcome = RunOutcome.ABORTED if fatal else _generate(job, token, generate_local)
    except services.ClaimLost:
        logger.warning("generation job %s: another worker took it over; this run stops.", job_id)
        return "lost"
    except Exception as exc:
        logger.exception("generation job %s crashed", job_id)
        services.generation_job_fail(
            job_id=job_id, token=token, message=f"The worker stopped: {type(exc).__name__}: {exc}"
        )
        return "failed"
    try:
        services.generation_job_finish(
            job_id=job_id, token=token, outcome=outcome.value, fatal_error=fatal
        )
    except services.ClaimLost:
        return "lost"
    return outcome.value


def _generate(job: GenerationJob, token: str, generate_local: types.ModuleType) -> RunOutcome:
    gl = generate_local
    snap = job.teacher_snapshot
    lm = gl.load(
        snap["model_path"], device=snap.get("device") or "auto", dtype=snap.get("dtype") or "auto"
    )
    settings = gl.LocalSettings.from_decoding(snap.get("decoding") or {})
    batch_size = int(snap.get("batch_size") or 16)
    stopped = False

    def requests():  # type: ignore[no-untyped-def]
        after = 0
        while True:
            page, last = selectors.generation_job_pending_items(
                job=job, after_prompt_id=after, limit=PAGE_SIZE
            )
            if last is None:
                return
            for item in page:
                yield gl.LocalRequest(
                    key=(item.prompt_id, item.sample_index), messages=item.messages
                )
            after = last

    def should_stop() -> bool:
        nonlocal stopped
        status = services.generation_job_heartbeat(job_id=job.pk, token=token)
        if status is None:
            raise services.ClaimLost(job.pk)
        stopped = status != JobStatus.RUNNING
        return stopped

    def on_batch(batch: list) -> None:
        services.generation_job_write_results(job_id=job.pk, token=token, results=_results(batch))

    gl.generate_all(
        lm, requests(), settings, batch_size=batch_size, on_batch=on_batch, should_stop=should_stop
    )
    return RunOutcome.STOPPED if stopped else RunOutcome.COMPLETED
