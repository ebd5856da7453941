"""Writes of the generation app: teachers, jobs and their completions.

Every state change of a job is a conditional update on its status (and, while a worker runs it, on
its `claim_token`), so a task delivered twice, a worker that lost its claim, or two admins clicking
at once cannot double anything. Counters are recomputed from the completion rows, never added to.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from distillapp.core.crypto import decrypt_secret, encrypt_secret
from distillapp.generation.decoding import MAX_SAMPLES, decoding_clean, decoding_merge
from distillapp.generation.models import (
    ACTIVE_STATUSES,
    ENDED_STATUSES,
    Completion,
    CompletionStatus,
    GenerationJob,
    JobStatus,
    Teacher,
    TeacherKind,
)
from distillapp.prompts.selectors import prompts_for_generation

if TYPE_CHECKING:
    from distillapp.projects.models import Project
    from distillapp.prompts.models import PromptSet
    from workers.teachers.openai_runner import ItemResult

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")
_UNSET: Any = object()


# --- teachers ---------------------------------------------------------------------------------


def _price(errors: dict[str, list[str]], key: str, value: Any) -> Decimal:
    try:
        price = Decimal(str(value if value not in (None, "") else 0))
    except (InvalidOperation, ValueError):
        errors[key] = ["Enter a price in dollars per million tokens."]
        return Decimal(0)
    if price < 0 or price > Decimal("1000000"):
        errors[key] = ["The price must be between 0 and 1,000,000 dollars per million tokens."]
    return price


def _optional_positive(
    errors: dict[str, list[str]], key: str, value: Any, *, hi: int
) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors[key] = ["Enter a whole number."]
        return None
    if not 1 <= number <= hi:
        errors[key] = [f"Enter a number between 1 and {hi:,}."]
    return number


def _validate_teacher(teacher: Teacher) -> None:
    errors: dict[str, list[str]] = {}
    teacher.name = (teacher.name or "").strip()
    if not teacher.name:
        errors["name"] = ["Give the teacher a name."]
    if teacher.kind not in TeacherKind.values:
        errors["kind"] = ["Choose openai or hf_local."]
    if teacher.kind == TeacherKind.OPENAI:
        teacher.base_url = (teacher.base_url or "").strip().rstrip("/")
        parsed = urlparse(teacher.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors["base_url"] = ["Enter the endpoint's base URL, e.g. https://api.openai.com/v1."]
        if not (teacher.model or "").strip():
            errors["model"] = ["Enter the model name the endpoint serves."]
        if not 1 <= int(teacher.concurrency or 0) <= 1024:
            errors["concurrency"] = ["Concurrency must be between 1 and 1,024."]
    elif teacher.kind == TeacherKind.HF_LOCAL:
        teacher.model_path = (teacher.model_path or "").strip()
        if not teacher.model_path:
            errors["model_path"] = ["Enter the folder that holds the model and its tokenizer."]
        if teacher.device not in DEVICES:
            errors["device"] = ["Device must be auto, cpu or cuda."]
        if teacher.dtype not in DTYPES:
            errors["dtype"] = [f"dtype must be one of {', '.join(DTYPES)}."]
        if not 1 <= int(teacher.batch_size or 0) <= 1024:
            errors["batch_size"] = ["Batch size must be between 1 and 1,024."]
    try:
        teacher.decoding = decoding_clean(teacher.decoding)
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, []).extend(messages)
    duplicate = Teacher.objects.filter(project_id=teacher.project_id, name=teacher.name).exclude(
        pk=teacher.pk
    )
    if teacher.name and duplicate.exists():
        errors["name"] = ["A teacher with this name already exists in the project."]
    if errors:
        raise ValidationError(errors)


def _set_api_key(teacher: Teacher, api_key: str) -> None:
    api_key = (api_key or "").strip()
    teacher.api_key_encrypted = encrypt_secret(api_key) if api_key else ""
    teacher.api_key_last4 = api_key[-4:] if api_key else ""


def teacher_create(
    *,
    project: Project,
    name: str,
    kind: str,
    base_url: str = "",
    model: str = "",
    api_key: str = "",
    model_path: str = "",
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 16,
    concurrency: int = 16,
    requests_per_minute: int | str | None = None,
    tokens_per_minute: int | str | None = None,
    price_input_per_m: Decimal | str | float | None = 0,
    price_output_per_m: Decimal | str | float | None = 0,
    decoding: dict[str, Any] | None = None,
) -> Teacher:
    """Create a teacher; its API key is stored encrypted, with only the last 4 characters in clear."""
    errors: dict[str, list[str]] = {}
    teacher = Teacher(
        project=project,
        name=name,
        kind=kind,
        base_url=base_url,
        model=(model or "").strip(),
        model_path=model_path,
        device=device or "auto",
        dtype=dtype or "auto",
        batch_size=_int_or(batch_size, 16),
        concurrency=_int_or(concurrency, 16),
        requests_per_minute=_optional_positive(
            errors, "requests_per_minute", requests_per_minute, hi=10**7
        ),
        tokens_per_minute=_optional_positive(
            errors, "tokens_per_minute", tokens_per_minute, hi=10**10
        ),
        price_input_per_m=_price(errors, "price_input_per_m", price_input_per_m),
        price_output_per_m=_price(errors, "price_output_per_m", price_output_per_m),
        decoding=decoding or {},
    )
    try:
        _validate_teacher(teacher)
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)
    _set_api_key(teacher, api_key)
    try:
        teacher.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"name": ["A teacher with this name already exists in the project."]}
        ) from exc
    return teacher


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return -1  # rejected by validation with a clear message


def teacher_update(
    *,
    teacher: Teacher,
    name: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    model_path: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int | str | None = None,
    concurrency: int | str | None = None,
    requests_per_minute: Any = _UNSET,
    tokens_per_minute: Any = _UNSET,
    price_input_per_m: Any = None,
    price_output_per_m: Any = None,
    decoding: dict[str, Any] | None = None,
) -> Teacher:
    """Change a teacher. None leaves a field as it is; `api_key=""` removes the key.

    Jobs keep their own snapshot, so edits never rewrite what a job ran with.
    """
    errors: dict[str, list[str]] = {}
    for field, value in (
        ("name", name),
        ("base_url", base_url),
        ("model", model),
        ("model_path", model_path),
        ("device", device),
        ("dtype", dtype),
    ):
        if value is not None:
            setattr(teacher, field, value.strip() if isinstance(value, str) else value)
    if batch_size is not None:
        teacher.batch_size = _int_or(batch_size, 16)
    if concurrency is not None:
        teacher.concurrency = _int_or(concurrency, 16)
    if requests_per_minute is not _UNSET:
        teacher.requests_per_minute = _optional_positive(
            errors, "requests_per_minute", requests_per_minute, hi=10**7
        )
    if tokens_per_minute is not _UNSET:
        teacher.tokens_per_minute = _optional_positive(
            errors, "tokens_per_minute", tokens_per_minute, hi=10**10
        )
    if price_input_per_m is not None:
        teacher.price_input_per_m = _price(errors, "price_input_per_m", price_input_per_m)
    if price_output_per_m is not None:
        teacher.price_output_per_m = _price(errors, "price_output_per_m", price_output_per_m)
    if decoding is not None:
        teacher.decoding = decoding
    try:
        _validate_teacher(teacher)
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        teacher.refresh_from_db()
        raise ValidationError(errors)
    if api_key is not None:
        _set_api_key(teacher, api_key)
    teacher.save()
    return teacher


def teacher_delete(*, teacher: Teacher) -> None:
    """Delete a teacher. Refused while one of its jobs is active; finished jobs keep their snapshot."""
    if GenerationJob.objects.filter(teacher=teacher, status__in=ACTIVE_STATUSES).exists():
        raise ValidationError("This teacher has a job that is still running. Cancel it first.")
    teacher.delete()


def teacher_api_key(teacher: Teacher) -> str:
    return decrypt_secret(teacher.api_key_encrypted) if teacher.api_key_encrypted else ""


def teacher_rotate_key(*, teacher: Teacher) -> bool:
    """Re-encrypt the API key with the current (first) key. True when a key was rewritten."""
    from cryptography.fernet import InvalidToken

    from distillapp.core.crypto import SecretDecryptionError, rotate_secret

    if not teacher.api_key_encrypted:
        return False
    try:
        rotated = rotate_secret(teacher.api_key_encrypted)
    except InvalidToken as exc:
        raise SecretDecryptionError("No configured key decrypts this secret.") from exc
    Teacher.objects.filter(pk=teacher.pk, api_key_encrypted=teacher.api_key_encrypted).update(
        api_key_encrypted=rotated
    )
    teacher.api_key_encrypted = rotated
    return True


def teacher_snapshot(
    *, teacher: Teacher, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The frozen copy a job runs with. Never holds the API key (only its last 4 characters)."""
    snapshot: dict[str, Any] = {
        "teacher_id": teacher.pk,
        "name": teacher.name,
        "kind": teacher.kind,
        "decoding": decoding_merge(teacher.decoding, overrides),
        "overrides": dict(overrides or {}),
        "taken_at": timezone.now().isoformat(),
    }
    if teacher.kind == TeacherKind.OPENAI:
        snapshot.update(
            base_url=teacher.base_url,
            model=teacher.model,
            api_key_last4=teacher.api_key_last4,
            concurrency=teacher.concurrency,
            requests_per_minute=teacher.requests_per_minute,
            tokens_per_minute=teacher.tokens_per_minute,
            price_input_per_m=str(teacher.price_input_per_m),
            price_output_per_m=str(teacher.price_output_per_m),
        )
    else:
        from workers.engine.generate_local import model_fingerprint

        snapshot.update(
            model_path=teacher.model_path,
            model=teacher.model or teacher.model_path.rstrip("/").rsplit("/", 1)[-1],
            device=teacher.device,
            dtype=teacher.dtype,
            batch_size=teacher.batch_size,
            # The web host may not see the GPU host's disk: the worker fills it in at first claim.
            fingerprint=model_fingerprint(teacher.model_path),
        )
    return snapshot


# --- jobs: launch and admin actions -----------------------------------------------------------


def _enqueue(job: GenerationJob) -> None:
    kind = (job.teacher_snapshot or {}).get("kind")
    if kind == TeacherKind.HF_LOCAL:
        from workers.tasks.gpu import run_local_generation_job as task
    else:
        from workers.tasks.teacher import run_generation_job as task
    task.delay_on_commit(job.pk)


def generation_job_start(
    *,
    project: Project,
    prompt_set: PromptSet,
    teacher: Teacher,
    samples_per_prompt: int | None = None,
    q: str | None = None,
    metadata: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    created_by: Any = None,
) -> GenerationJob:
    """Freeze the teacher's settings into a new queued job and enqueue it (after commit).

    Prompts come only from `prompts_for_generation`, so held-out prompts never reach a teacher.
    """
    if prompt_set.project_id != project.pk or teacher.project_id != project.pk:
        raise ValidationError("The prompt set and the teacher must belong to this project.")
    errors: dict[str, list[str]] = {}
    try:
        snapshot = teacher_snapshot(teacher=teacher, overrides=overrides)
    except ValidationError as exc:
        raise ValidationError(
            {
                f"overrides.{k}" if k != "decoding" else "overrides": v
                for k, v in exc.message_dict.items()
            }
        ) from exc
    n = (
        samples_per_prompt
        if samples_per_prompt not in (None, "")
        else snapshot["decoding"].get("n", 1)
    )
    try:
        n = int(n)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_SAMPLES:
        errors["samples_per_prompt"] = [f"Samples per prompt must be between 1 and {MAX_SAMPLES}."]
    metadata = {str(k): str(v) for k, v in (metadata or {}).items() if str(k).strip()}
    q = (q or "").strip() or None
    count = prompts_for_generation(prompt_set=prompt_set, q=q, metadata=metadata).count()
    if count == 0 and not errors:
        errors["prompt_set"] = [
            "No train prompts match. Held-out prompts are never sent to a teacher."
        ]
    if errors:
        raise ValidationError(errors)
    snapshot["decoding"]["n"] = n
    job = GenerationJob.objects.create(
        project=project,
        prompt_set=prompt_set,
        teacher=teacher,
        teacher_snapshot=snapshot,
        samples_per_prompt=n,
        prompt_filter={"q": q, "metadata": metadata},
        status=JobStatus.QUEUED,
        total=count * n,
        created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
    )
    _enqueue(job)
    return job


def generation_job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Queued → cancelled; running → cancelling (the worker stops within seconds and keeps its work).

    A running job whose worker is gone (stale heartbeat) is cancelled at once.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.GENERATION_STALE_SECONDS)
    ended = {
        "status": JobStatus.CANCELLED,
        "finished_at": now,
        "claim_token": "",
        "message": "Cancelled.",
    }
    updated = (
        GenerationJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(**ended)
        or GenerationJob.objects.filter(
            pk=job.pk, status__in=[JobStatus.RUNNING, JobStatus.CANCELLING]
        )
        .filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True))
        .update(**ended)
        or GenerationJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
            status=JobStatus.CANCELLING
        )
    )
    job.refresh_from_db()
    if not updated:
        raise ValidationError(f"A {job.get_status_display().lower()} job cannot be cancelled.")
    return job


def _requeue(
    job: GenerationJob, *, from_statuses: tuple[str, ...], retry_failed: bool, refusal: str
) -> GenerationJob:
    updated = GenerationJob.objects.filter(pk=job.pk, status__in=from_statuses).update(
        status=JobStatus.QUEUED,
        claim_token="",
        finished_at=None,
        message="",
        retry_failed=retry_failed,
    )
    job.refresh_from_db()
    if not updated:
        raise ValidationError(refusal)
    _enqueue(job)
    return job


def generation_job_resume(*, job: GenerationJob) -> GenerationJob:
    """Cancelled or failed → queued: the next run sends only the items that have no completion yet.

    A running job whose worker stopped heart-beating is re-enqueued as it is: the next worker takes
    it over (the same path as the recovery at worker start).
    """
    stale = timezone.now() - timedelta(seconds=settings.GENERATION_STALE_SECONDS)
    if (
        GenerationJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING)
        .filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True))
        .exists()
    ):
        _enqueue(job)
        return job
    return _requeue(
        job,
        from_statuses=(JobStatus.CANCELLED, JobStatus.FAILED),
        retry_failed=False,
        refusal="Only a cancelled or failed job can be resumed.",
    )


def generation_job_retry_failed(*, job: GenerationJob) -> GenerationJob:
    """An ended job with failed items → queued: the next run regenerates the failed items (and any
    never sent, for a job that was cancelled); completions that succeeded are never sent again."""
    if (
        job.status not in ENDED_STATUSES
        or not job.completions.filter(status=CompletionStatus.FAILED).exists()
    ):
        raise ValidationError("Only a finished job with failed items can retry them.")
    return _requeue(
        job,
        from_statuses=ENDED_STATUSES,
        retry_failed=True,
        refusal="The job changed; reload the page.",
    )


# --- jobs: what workers call --------------------------------------------------------------------


class ClaimState(StrEnum):
    CLAIMED = "claimed"
    BUSY = "busy"  # another live worker runs it
    ENDED = "ended"  # nothing to do (finished, cancelled, or gone)


@dataclass
class Claim:
    state: ClaimState
    job: GenerationJob | None = None
    token: str = ""


def new_claim_token() -> str:
    return f"{uuid.uuid4().hex[:16]}{secrets.token_hex(8)}"


def generation_job_claim(*, job_id: int, stale_after: float | None = None) -> Claim:
    """Take a job for this worker run: queued → running, or take over a running job whose
    worker stopped heart-beating. A cancelling job with a dead worker becomes cancelled."""
    stale_after = settings.GENERATION_STALE_SECONDS if stale_after is None else stale_after
    now = timezone.now()
    stale = now - timedelta(seconds=stale_after)
    token = new_claim_token()
    base = GenerationJob.objects.filter(pk=job_id)
    claimed = base.filter(status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, claim_token=token, heartbeat_at=now, run_started_at=now
    ) or base.filter(status=JobStatus.RUNNING).filter(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True)
    ).update(claim_token=token, heartbeat_at=now, run_started_at=now)
    if claimed:
        job = GenerationJob.objects.select_related("teacher").get(pk=job_id)
        counts = _refresh_counts(job.pk)
        GenerationJob.objects.filter(pk=job.pk, claim_token=token).update(
            started_at=job.started_at or now,
            run_start_count=counts["done"] + counts["failed"],
            total=_job_total(job),
        )
        job.refresh_from_db()
        return Claim(ClaimState.CLAIMED, job, token)
    base.filter(status=JobStatus.CANCELLING).filter(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True)
    ).update(status=JobStatus.CANCELLED, finished_at=now, claim_token="", message="Cancelled.")
    current = base.first()
    if current is not None and current.status in (JobStatus.RUNNING, JobStatus.CANCELLING):
        return Claim(ClaimState.BUSY, current)
    return Claim(ClaimState.ENDED, current)


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
    if not GenerationJob.objects.filter(pk=job_id, claim_token=token).update(
        heartbeat_at=timezone.now()
    ):
        return None
    return GenerationJob.objects.filter(pk=job_id).values_list("status", flat=True).first()


def generation_job_set_fingerprint(*, job_id: int, token: str, fingerprint: str) -> None:
    """Record the weights' fingerprint the first time a worker sees them (web host may not)."""
    job = GenerationJob.objects.get(pk=job_id, claim_token=token)
    snapshot = dict(job.teacher_snapshot)
    snapshot["fingerprint"] = fingerprint
    GenerationJob.objects.filter(pk=job_id, claim_token=token).update(teacher_snapshot=snapshot)


class ClaimLost(Exception):
    """This worker run no longer owns the job; it must stop without writing."""


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


def _enqueue_filters(job: GenerationJob) -> None:
    try:
        from workers.tasks.filters import run_job_filters
    except ImportError:
        logger.warning(
            "workers.tasks.filters.run_job_filters is not available; job %s was not filtered.",
            job.pk,
        )
        return
    from distillapp.filters.services import filters_queue

    run_job_filters.apply_async_on_commit((job.pk,), queue=filters_queue(job.project))


def generation_job_finish(
    *, job_id: int, token: str, outcome: str, fatal_error: str = ""
) -> GenerationJob:
    """End this run: cancelled (if asked), failed (fatal error or every item failed) or succeeded.

    Successful jobs (also those with some failed items) get the automatic filters enqueued.
    `outcome` is the runner's: completed, stopped or aborted.
    """
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().filter(pk=job_id, claim_token=token).first()
        if job is None:
            raise ClaimLost(job_id)
        counts = _refresh_counts(job_id)
        done, failed = counts["done"], counts["failed"]
        now = timezone.now()
        if job.status == JobStatus.CANCELLING or (outcome == "stopped" and not fatal_error):
            status, message = JobStatus.CANCELLED, f"Cancelled with {done} of {job.total} done."
        elif fatal_error:
            status, message = JobStatus.FAILED, f"Stopped: {fatal_error}"
        elif done == 0 and failed > 0:
            status, message = JobStatus.FAILED, f"All {failed} items failed; see the errors below."
        else:
            missing = max(0, job.total - done - failed)
            status = JobStatus.SUCCEEDED
            parts = [
                f"{failed} item{'s' if failed != 1 else ''} failed" if failed else "",
                f"{missing} not sent" if missing else "",
            ]
            message = "; ".join(p for p in parts if p)
        GenerationJob.objects.filter(pk=job_id, claim_token=token).update(
            status=status,
            message=message,
            finished_at=now,
            heartbeat_at=now,
            claim_token="",
            retry_failed=False,
        )
        if status == JobStatus.SUCCEEDED and done > 0:
            transaction.on_commit(lambda: _enqueue_filters(job))
    job.refresh_from_db()
    return job


def generation_job_fail(*, job_id: int, token: str, message: str) -> None:
    """A run crashed on something other than a teacher error (a bug, the database): resumable."""
    _refresh_counts(job_id)
    GenerationJob.objects.filter(pk=job_id, claim_token=token).update(
        status=JobStatus.FAILED, message=message[:2000], finished_at=timezone.now(), claim_token=""
    )


def generation_jobs_recover(*, stale_after: float | None = None) -> list[int]:
    """Re-enqueue running or cancelling jobs whose worker stopped heart-beating (a worker killed
    with SIGKILL, a host lost). Safe to call anywhere, any number of times: the claim decides."""
    stale_after = settings.GENERATION_STALE_SECONDS if stale_after is None else stale_after
    stale = timezone.now() - timedelta(seconds=stale_after)
    jobs = list(
        GenerationJob.objects.filter(status__in=[JobStatus.RUNNING, JobStatus.CANCELLING]).filter(
            Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True)
        )
    )
    for job in jobs:
        _enqueue(job)
    return [job.pk for job in jobs]
