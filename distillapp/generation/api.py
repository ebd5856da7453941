"""REST API of teachers and generation jobs. GET: viewer; changes and tests: admin; outsiders 404.

API keys are write-only: responses carry `api_key_last4` and `has_api_key`, never the key.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from distillapp.accounts.models import Role
from distillapp.core.cursor import decode_cursor, encode_cursor
from distillapp.generation import selectors, services
from distillapp.generation.models import Completion, GenerationJob, Teacher
from distillapp.generation.probe import teacher_test
from distillapp.projects.access import get_project_for_user, get_scoped_object
from distillapp.prompts.models import PromptSet

router = Router(tags=["generation"])


# One set of field types for POST and PATCH, so both refuse the same values before the service
# (which checks them again, for the UI too) and the OpenAPI document states the ranges.
Name = Annotated[str, Field(min_length=1, max_length=120)]
BaseUrl = Annotated[str, Field(max_length=500)]
ModelName = Annotated[str, Field(max_length=200)]
ApiKey = Annotated[str, Field(max_length=1000)]
ModelPath = Annotated[str, Field(max_length=1000)]
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
BatchSize = Annotated[int, Field(ge=1, le=1024)]
Concurrency = Annotated[int, Field(ge=1, le=1024)]
RequestsPerMinute = Annotated[int, Field(ge=1, le=10_000_000)]
TokensPerMinute = Annotated[int, Field(ge=1, le=2_147_483_647)]
Price = Annotated[Decimal, Field(ge=0, le=Decimal("999999.999999"), allow_inf_nan=False)]


class Prices(Schema):
    input_per_m: Price = Decimal(0)
    output_per_m: Price = Decimal(0)


class PricesPatch(Schema):
    input_per_m: Price | None = None
    output_per_m: Price | None = None


class TeacherIn(Schema):
    name: Name
    kind: Literal["openai", "hf_local"]
    base_url: BaseUrl = ""
    model: ModelName = ""
    api_key: ApiKey = ""
    model_path: ModelPath = ""
    device: Device = "auto"
    dtype: Dtype = "auto"
    batch_size: BatchSize = 16
    concurrency: Concurrency = 16
    requests_per_minute: RequestsPerMinute | None = None
    tokens_per_minute: TokensPerMinute | None = None
    decoding: dict[str, Any] = {}
    prices: Prices = Prices()


class TeacherPatch(Schema):
    """The fields of TeacherIn, each optional; `kind` cannot change."""

    name: Name | None = None
    base_url: BaseUrl | None = None
    model: ModelName | None = None
    api_key: ApiKey | None = None
    model_path: ModelPath | None = None
    device: Device | None = None
    dtype: Dtype | None = None
    batch_size: BatchSize | None = None
    concurrency: Concurrency | None = None
    requests_per_minute: RequestsPerMinute | None = None
    tokens_per_minute: TokensPerMinute | None = None
    decoding: dict[str, Any] | None = None
    prices: PricesPatch | None = None


class PricesOut(Schema):
    input_per_m: str
    output_per_m: str


class TeacherOut(Schema):
    id: int
    project_id: int
    name: str
    kind: str
    base_url: str
    model: str
    has_api_key: bool
    api_key_last4: str
    model_path: str
    device: str
    dtype: str
    batch_size: int
    concurrency: int
    requests_per_minute: int | None
    tokens_per_minute: int | None
    decoding: dict[str, Any]
    prices: PricesOut
    created_at: datetime
    updated_at: datetime


class TestIn(Schema):
    prompt: str = ""


class TestOut(Schema):
    ok: bool
    text: str
    error: str
    latency_ms: int
    details: dict[str, Any]


class JobIn(Schema):
    prompt_set_id: int
    teacher_id: int
    samples_per_prompt: int | None = None
    overrides: dict[str, Any] = {}
    q: str | None = None
    metadata: dict[str, str] | None = None


class JobOut(Schema):
    id: int
    project_id: int
    prompt_set_id: int
    teacher_id: int | None
    status: str
    total: int
    done: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: str
    throughput_per_s: float | None
    eta_seconds: float | None
    message: str
    samples_per_prompt: int
    prompt_filter: dict[str, Any]
    teacher_snapshot: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class CompletionOut(Schema):
    id: int
    prompt_id: int
    sample_index: int
    status: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    cost_usd: str
    mean_logprob: float | None
    has_topk: bool
    error: str
    attempts: int


class CompletionPage(Schema):
    items: list[CompletionOut]
    next_cursor: str | None


def _money(value: Decimal | float | str) -> str:
    return format(Decimal(str(value)).normalize(), "f")


def teacher_out(t: Teacher) -> TeacherOut:
    return TeacherOut(
        id=t.pk,
        project_id=t.project_id,
        name=t.name,
        kind=t.kind,
        base_url=t.base_url,
        model=t.model,
        has_api_key=bool(t.api_key_encrypted),
        api_key_last4=t.api_key_last4,
        model_path=t.model_path,
        device=t.device,
        dtype=t.dtype,
        batch_size=t.batch_size,
        concurrency=t.concurrency,
        requests_per_minute=t.requests_per_minute,
        tokens_per_minute=t.tokens_per_minute,
        decoding=t.decoding or {},
        prices=PricesOut(
            input_per_m=_money(t.price_input_per_m), output_per_m=_money(t.price_output_per_m)
        ),
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def job_out(job: GenerationJob) -> JobOut:
    progress = selectors.job_progress(job=job)
    return JobOut(
        id=job.pk,
        project_id=job.project_id,
        prompt_set_id=job.prompt_set_id,
        teacher_id=job.teacher_id,
        status=job.status,
        total=job.total,
        done=job.done,
        failed=job.failed,
        prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens,
        cost_usd=str(job.cost_usd),
        throughput_per_s=progress.throughput,
        eta_seconds=progress.eta_seconds,
        message=job.message,
        samples_per_prompt=job.samples_per_prompt,
        prompt_filter=job.prompt_filter or {},
        teacher_snapshot=job.teacher_snapshot or {},
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        heartbeat_at=job.heartbeat_at,
    )


def completion_out(c: Completion) -> CompletionOut:
    return CompletionOut(
        id=c.pk,
        prompt_id=c.prompt_id,
        sample_index=c.sample_index,
        status=c.status,
        text=c.text,
        finish_reason=c.finish_reason,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        latency_ms=c.latency_ms,
        cost_usd=str(c.cost_usd),
        mean_logprob=c.mean_logprob,
        has_topk=c.topk is not None,
        error=c.error,
        attempts=c.attempts,
    )


@router.get("/projects/{project_id}/teachers", response=list[TeacherOut])
def list_teachers(request: HttpRequest, project_id: int) -> list[TeacherOut]:
    project, _m = get_project_for_user(request.user, project_id)
    return [teacher_out(t) for t in selectors.teachers_for_project(project=project)]


@router.post("/projects/{project_id}/teachers", response={201: TeacherOut})
def create_teacher(request: HttpRequest, project_id: int, payload: TeacherIn) -> Status:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    teacher = services.teacher_create(
        project=project,
        name=payload.name,
        kind=payload.kind,
        base_url=payload.base_url,
        model=payload.model,
        api_key=payload.api_key,
        model_path=payload.model_path,
        device=payload.device,
        dtype=payload.dtype,
        batch_size=payload.batch_size,
        concurrency=payload.concurrency,
        requests_per_minute=payload.requests_per_minute,
        tokens_per_minute=payload.tokens_per_minute,
        price_input_per_m=payload.prices.input_per_m,
        price_output_per_m=payload.prices.output_per_m,
        decoding=payload.decoding,
    )
    return Status(201, teacher_out(teacher))


@router.get("/teachers/{teacher_id}", response=TeacherOut)
def get_teacher(request: HttpRequest, teacher_id: int) -> TeacherOut:
    teacher, _m = get_scoped_object(request.user, Teacher.objects.all(), teacher_id)
    return teacher_out(teacher)


@router.patch("/teachers/{teacher_id}", response=TeacherOut)
def patch_teacher(request: HttpRequest, teacher_id: int, payload: TeacherPatch) -> TeacherOut:
    teacher, _m = get_scoped_object(request.user, Teacher.objects.all(), teacher_id, Role.ADMIN)
    data = payload.dict(exclude_unset=True)
    prices = data.pop("prices", None) or {}
    kwargs: dict[str, Any] = {
        k: v for k, v in data.items() if k not in ("requests_per_minute", "tokens_per_minute")
    }
    for key in ("requests_per_minute", "tokens_per_minute"):
        if key in data:
            kwargs[key] = data[key]  # null clears the limit
    teacher = services.teacher_update(
        teacher=teacher,
        price_input_per_m=prices.get("input_per_m"),
        price_output_per_m=prices.get("output_per_m"),
        **kwargs,
    )
    return teacher_out(teacher)


@router.delete("/teachers/{teacher_id}", response={204: None})
def delete_teacher(request: HttpRequest, teacher_id: int) -> Status:
    teacher, _m = get_scoped_object(request.user, Teacher.objects.all(), teacher_id, Role.ADMIN)
    services.teacher_delete(teacher=teacher)
    return Status(204, None)


@router.post("/teachers/{teacher_id}/test", response=TestOut)
def test_teacher(request: HttpRequest, teacher_id: int, payload: TestIn) -> TestOut:
    teacher, _m = get_scoped_object(request.user, Teacher.objects.all(), teacher_id, Role.ADMIN)
    result = teacher_test(teacher=teacher, prompt=payload.prompt)
    return TestOut(
        ok=result.ok,
        text=result.text,
        error=result.error,
        latency_ms=result.latency_ms,
        details=result.details,
    )


@router.get("/projects/{project_id}/generation-jobs", response=list[JobOut])
def list_jobs(request: HttpRequest, project_id: int) -> list[JobOut]:
    project, _m = get_project_for_user(request.user, project_id)
    return [job_out(j) for j in selectors.jobs_for_project(project=project, limit=200)]


@router.post("/projects/{project_id}/generation-jobs", response={201: JobOut})
def create_job(request: HttpRequest, project_id: int, payload: JobIn) -> Status:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    prompt_set = PromptSet.objects.filter(pk=payload.prompt_set_id, project=project).first()
    teacher = Teacher.objects.filter(pk=payload.teacher_id, project=project).first()
    errors = {}
    if prompt_set is None:
        errors["prompt_set_id"] = ["No such prompt set in this project."]
    if teacher is None:
        errors["teacher_id"] = ["No such teacher in this project."]
    if errors:
        raise ValidationError(errors)
    assert prompt_set is not None and teacher is not None  # otherwise errors was raised above
    job = services.generation_job_start(
        project=project,
        prompt_set=prompt_set,
        teacher=teacher,
        samples_per_prompt=payload.samples_per_prompt,
        q=payload.q,
        metadata=payload.metadata,
        overrides=payload.overrides,
        created_by=request.user,
    )
    return Status(201, job_out(job))


def _job(request: HttpRequest, job_id: int, role: str = Role.VIEWER) -> GenerationJob:
    job, _m = get_scoped_object(request.user, GenerationJob.objects.all(), job_id, role)
    return job


@router.get("/generation-jobs/{job_id}", response=JobOut)
def get_job(request: HttpRequest, job_id: int) -> JobOut:
    return job_out(_job(request, job_id))


@router.post("/generation-jobs/{job_id}/cancel", response=JobOut)
def cancel_job(request: HttpRequest, job_id: int) -> JobOut:
    return job_out(services.generation_job_cancel(job=_job(request, job_id, Role.ADMIN)))


@router.post("/generation-jobs/{job_id}/resume", response=JobOut)
def resume_job(request: HttpRequest, job_id: int) -> JobOut:
    return job_out(services.generation_job_resume(job=_job(request, job_id, Role.ADMIN)))


@router.post("/generation-jobs/{job_id}/retry-failed", response=JobOut)
def retry_failed(request: HttpRequest, job_id: int) -> JobOut:
    return job_out(services.generation_job_retry_failed(job=_job(request, job_id, Role.ADMIN)))


@router.get("/generation-jobs/{job_id}/completions", response=CompletionPage)
def list_completions(
    request: HttpRequest,
    job_id: int,
    cursor: str | None = None,
    limit: int = 100,
    status: str | None = None,
) -> CompletionPage:
    job = _job(request, job_id)
    limit = max(1, min(limit, 500))
    page = selectors.job_completions_page(
        job=job, after_id=decode_cursor(cursor), limit=limit + 1, status=status
    )
    more = len(page) > limit
    page = page[:limit]
    return CompletionPage(
        items=[completion_out(c) for c in page],
        next_cursor=encode_cursor(page[-1].pk) if more and page else None,
    )
