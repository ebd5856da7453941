"""REST API of base models, training runs, their metrics and artefacts. Reads and downloads:
every member; add, change, delete, launch, cancel, resume, quantise: admins and owners;
outsiders 404. Errors use the API's `{detail, errors}` shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from ninja import Query, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status
from pydantic import Field

from distillapp.accounts.models import Role
from distillapp.projects.access import get_project_for_user, get_scoped_object
from distillapp.training import artifacts, selectors, services
from distillapp.training.models import BaseModel, QuantizationRun, TrainingArtifact, TrainingRun

router = Router(tags=["training"])

_ID = Annotated[int, Field(ge=1, le=2**63 - 1)]
_BIG = 10_000_000


class BaseModelIn(Schema):
    name: Annotated[str, Field(min_length=1, max_length=120)]
    path: Annotated[str, Field(max_length=1000)] = ""
    hub_id: Annotated[str, Field(max_length=200)] = ""


class BaseModelPatch(Schema):
    name: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    path: Annotated[str, Field(max_length=1000)] | None = None
    hub_id: Annotated[str, Field(max_length=200)] | None = None
    reinspect: bool = False


class TeacherCheckOut(Schema):
    teacher_id: int
    name: str
    kd: bool | None
    reason: str
    sft: bool


class BaseModelOut(Schema):
    id: int
    project_id: int
    name: str
    source: str
    path: str
    hub_id: str
    status: str
    message: str
    inspection: dict[str, Any]
    teachers: list[TeacherCheckOut]
    created_at: datetime
    finished_at: datetime | None


class LaunchIn(Schema):
    """`dataset_version_id`, `base_model_id`, `method` and any setting by its TrainConfig name."""

    dataset_version_id: _ID
    base_model_id: _ID
    method: Literal["sft", "kd"] = "sft"
    teacher_id: _ID | None = None
    lora: bool | None = None
    lora_r: Annotated[int, Field(ge=1, le=1024)] | None = None
    lora_alpha: Annotated[int, Field(ge=1, le=4096)] | None = None
    lora_dropout: Annotated[float, Field(ge=0, le=0.9)] | None = None
    target_modules: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    learning_rate: Annotated[float, Field(ge=1e-8, le=1.0)] | None = None
    lr_scheduler: (
        Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"]
        | None
    ) = None
    epochs: Annotated[float, Field(ge=0.01, le=1000)] | None = None
    max_steps: Annotated[int, Field(ge=-1, le=_BIG)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=4096)] | None = None
    grad_accum: Annotated[int, Field(ge=1, le=4096)] | None = None
    max_length: Annotated[int, Field(ge=2, le=1_048_576)] | None = None
    packing: bool | None = None
    group_by_length: bool | None = None
    strip_reasoning: bool | None = None
    temperature: Annotated[float, Field(ge=0.01, le=100)] | None = None
    alpha: Annotated[float, Field(ge=0, le=1)] | None = None
    warmup_steps: Annotated[float, Field(ge=0, le=_BIG)] | None = None
    weight_decay: Annotated[float, Field(ge=0, le=10)] | None = None
    save_steps: Annotated[int, Field(ge=1, le=_BIG)] | None = None
    logging_steps: Annotated[int, Field(ge=1, le=_BIG)] | None = None
    eval_steps: Annotated[int, Field(ge=1, le=_BIG)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    gradient_checkpointing: bool | None = None


class ArtifactOut(Schema):
    name: str
    size_bytes: int
    metrics: dict[str, Any]
    created_at: datetime
    download_url: str


class QuantizationOut(Schema):
    id: int
    scheme: str
    status: str
    message: str
    metrics: dict[str, Any]


class TrainingRunOut(Schema):
    id: int
    project_id: int
    dataset_version_id: int
    base_model_id: int
    teacher_id: int | None
    method: str
    status: str
    message: str
    config: dict[str, Any]
    preview: dict[str, Any]
    result: dict[str, Any]
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    step: int
    total_steps: int
    percent: float
    eta_s: float | None
    tokens_per_s: float | None
    device: str | None
    peak_memory_mb: float | None
    train_loss: float | None
    eval_loss: float | None
    queue_position: int | None
    truncation: dict[str, Any]


class TrainingRunDetailOut(TrainingRunOut):
    log_tail: list[str]
    artifacts: list[ArtifactOut]
    quantizations: list[QuantizationOut]


class MetricOut(Schema):
    step: int
    epoch: float | None
    train_loss: float | None
    eval_loss: float | None
    learning_rate: float | None
    grad_norm: float | None
    tokens_per_s: float | None


class MetricsQuery(Schema):
    since_step: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None


class QuantizeIn(Schema):
    scheme: Literal["int8", "int4"] = "int8"


def _base_model_out(b: BaseModel) -> BaseModelOut:
    teachers = [
        TeacherCheckOut(
            teacher_id=t["teacher_id"], name=t["name"], kd=t["kd"], reason=t["reason"], sft=True
        )
        for t in selectors.base_model_teachers(base_model=b)
    ]
    return BaseModelOut(
        id=b.pk,
        project_id=b.project_id,
        name=b.name,
        source=b.source,
        path=b.path,
        hub_id=b.hub_id,
        status=b.status,
        message=b.message,
        inspection=b.inspection,
        teachers=teachers,
        created_at=b.created_at,
        finished_at=b.finished_at,
    )


def _run_fields(run: TrainingRun) -> dict[str, Any]:
    s = selectors.training_run_summary(run=run)
    return {
        "id": run.pk,
        "project_id": run.project_id,
        "dataset_version_id": run.dataset_version_id,
        "base_model_id": run.base_model_id,
        "teacher_id": run.teacher_id,
        "method": run.method,
        "status": run.status,
        "message": run.message,
        "config": run.config,
        "preview": run.preview,
        "result": run.result,
        "created_by": run.created_by.username if run.created_by else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "step": s["step"],
        "total_steps": s["total_steps"],
        "percent": s["percent"],
        "eta_s": s["eta_s"],
        "tokens_per_s": s["tokens_per_s"],
        "device": s["device"],
        "peak_memory_mb": s["peak_memory_mb"],
        "train_loss": s["train_loss"],
        "eval_loss": s["eval_loss"],
        "queue_position": s["queue_position"],
        "truncation": s["truncation"],
    }


def _artifact_out(a: TrainingArtifact) -> ArtifactOut:
    return ArtifactOut(
        name=a.name,
        size_bytes=a.size_bytes,
        metrics=a.metrics,
        created_at=a.created_at,
        download_url=f"/api/v1/training-runs/{a.run_id}/artifacts/{a.name}/download",
    )


def _run_detail(run: TrainingRun) -> TrainingRunDetailOut:
    return TrainingRunDetailOut(
        **_run_fields(run),
        log_tail=selectors.training_run_summary(run=run)["log_tail"],
        artifacts=[_artifact_out(a) for a in selectors.training_artifacts(run=run)],
        quantizations=[
            QuantizationOut(
                id=q.pk, scheme=q.scheme, status=q.status, message=q.message, metrics=q.metrics
            )  # fmt: skip
            for q in selectors.training_quantizations(run=run)
        ],
    )


def _base_model(request: HttpRequest, base_model_id: int, role: str = Role.VIEWER) -> BaseModel:
    obj, _m = get_scoped_object(request.user, BaseModel.objects.all(), base_model_id, role)
    return obj


def _run(request: HttpRequest, training_run_id: int, role: str = Role.VIEWER) -> TrainingRun:
    obj, _m = get_scoped_object(
        request.user,
        TrainingRun.objects.select_related("created_by", "dataset_version", "base_model"),
        training_run_id,
        role,
    )
    return obj


@router.get("/projects/{project_id}/base-models", response=list[BaseModelOut])
def list_base_models(request: HttpRequest, project_id: int) -> list[BaseModelOut]:
    project, _m = get_project_for_user(request.user, project_id)
    return [_base_model_out(b) for b in selectors.base_models_for_project(project=project)]


@router.post("/projects/{project_id}/base-models", response={202: BaseModelOut})
def add_base_model(request: HttpRequest, project_id: int, payload: BaseModelIn) -> Status:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    b = services.base_model_create(
        project=project, user=request.user, name=payload.name, path=payload.path,
        hub_id=payload.hub_id,
    )  # fmt: skip
    return Status(202, _base_model_out(b))


@router.get("/base-models/{base_model_id}", response=BaseModelOut)
def get_base_model(request: HttpRequest, base_model_id: int) -> BaseModelOut:
    return _base_model_out(_base_model(request, base_model_id))


@router.patch("/base-models/{base_model_id}", response=BaseModelOut)
def change_base_model(
    request: HttpRequest, base_model_id: int, payload: BaseModelPatch
) -> BaseModelOut:
    b = _base_model(request, base_model_id, Role.ADMIN)
    b = services.base_model_update(
        base_model=b, name=payload.name, path=payload.path, hub_id=payload.hub_id
    )
    if payload.reinspect:
        b = services.base_model_inspect(base_model=b)
    return _base_model_out(b)


@router.delete("/base-models/{base_model_id}", response={204: None})
def delete_base_model(request: HttpRequest, base_model_id: int) -> Status:
    b = _base_model(request, base_model_id, Role.ADMIN)
    try:
        services.base_model_delete(base_model=b, user=request.user)
    except ValidationError as exc:
        raise HttpError(409, " ".join(exc.messages)) from exc
    return Status(204, None)


@router.get("/projects/{project_id}/training-runs", response=list[TrainingRunOut])
def list_training_runs(request: HttpRequest, project_id: int) -> list[TrainingRunOut]:
    project, _m = get_project_for_user(request.user, project_id)
    return [
        TrainingRunOut(**_run_fields(r))
        for r in selectors.training_runs_for_project(project=project)[:500]
    ]


@router.post("/projects/{project_id}/training-runs", response={202: TrainingRunDetailOut})
def launch_training_run(request: HttpRequest, project_id: int, payload: LaunchIn) -> Status:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    data = payload.dict(exclude_none=True)
    fixed = {k: data.pop(k) for k in ("dataset_version_id", "base_model_id", "method")}
    teacher_id = data.pop("teacher_id", None)
    run = services.training_run_launch(
        project=project, user=request.user, teacher_id=teacher_id, config=data, **fixed
    )
    return Status(202, _run_detail(run))


@router.get("/training-runs/{training_run_id}", response=TrainingRunDetailOut)
def get_training_run(request: HttpRequest, training_run_id: int) -> TrainingRunDetailOut:
    return _run_detail(_run(request, training_run_id))


@router.get("/training-runs/{training_run_id}/metrics", response=list[MetricOut])
def get_training_metrics(
    request: HttpRequest, training_run_id: int, query: Query[MetricsQuery]
) -> list[MetricOut]:
    run = _run(request, training_run_id)
    return [
        MetricOut(
            step=m.step,
            epoch=m.epoch,
            train_loss=m.train_loss,
            eval_loss=m.eval_loss,
            learning_rate=m.learning_rate,
            grad_norm=m.grad_norm,
            tokens_per_s=m.tokens_per_s,
        )  # fmt: skip
        for m in selectors.training_metrics(run=run, since_step=query.since_step)
    ]


def _conflict(exc: ValidationError) -> HttpError:
    return HttpError(409, " ".join(exc.messages))


@router.post("/training-runs/{training_run_id}/cancel", response=TrainingRunDetailOut)
def cancel_training_run(request: HttpRequest, training_run_id: int) -> TrainingRunDetailOut:
    run = _run(request, training_run_id, Role.ADMIN)
    try:
        run = services.training_run_cancel(run=run)
    except ValidationError as exc:
        raise _conflict(exc) from exc
    return _run_detail(run)


@router.post("/training-runs/{training_run_id}/resume", response=TrainingRunDetailOut)
def resume_training_run(request: HttpRequest, training_run_id: int) -> TrainingRunDetailOut:
    run = _run(request, training_run_id, Role.ADMIN)
    try:
        run = services.training_run_resume(run=run)
    except ValidationError as exc:
        raise _conflict(exc) from exc
    return _run_detail(run)


@router.get("/training-runs/{training_run_id}/artifacts", response=list[ArtifactOut])
def list_artifacts(request: HttpRequest, training_run_id: int) -> list[ArtifactOut]:
    run = _run(request, training_run_id)
    return [_artifact_out(a) for a in selectors.training_artifacts(run=run)]


@router.get(
    "/training-runs/{training_run_id}/artifacts/{artifact_name}/download",
    response={200: None},
    openapi_extra={
        "responses": {
            200: {
                "description": "A zip archive, streamed.",
                "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            },
            409: {
                "description": "The run has not succeeded, or the artefact's files are missing.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        }
    },
)
def download_artifact(
    request: HttpRequest,
    training_run_id: int,
    artifact_name: Annotated[str, Field(max_length=40)],
) -> HttpResponseBase:
    run = _run(request, training_run_id)
    artifact = TrainingArtifact.objects.filter(run=run, name=artifact_name).first()
    if artifact is None:
        raise HttpError(409, f"This run has no artefact named {artifact_name!r} (yet).")
    try:
        return artifacts.artifact_download(artifact=artifact)
    except artifacts.NotDownloadable as exc:
        raise HttpError(409, str(exc)) from exc


@router.post("/training-runs/{training_run_id}/quantize", response={202: QuantizationOut})
def quantize_training_run(
    request: HttpRequest, training_run_id: int, payload: QuantizeIn
) -> Status:
    run = _run(request, training_run_id, Role.ADMIN)
    try:
        q: QuantizationRun = services.training_run_quantize(
            run=run, user=request.user, scheme=payload.scheme
        )
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            raise
        raise _conflict(exc) from exc
    return Status(
        202,
        QuantizationOut(
            id=q.pk, scheme=q.scheme, status=q.status, message=q.message, metrics=q.metrics
        ),  # fmt: skip
    )
