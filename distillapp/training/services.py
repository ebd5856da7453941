"""Writes of training: base models (add, change, inspect, delete), training runs (launch, cancel,
resume) and quantisation. Keyword-only; views, the API, tasks and tests call the same functions.

What runs on a worker (inspection, training, quantisation) lives in `runner.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from distillapp.accounts.services import audit_record
from distillapp.core.paths import ModelPathRefused, check_model_path, org_artifacts_dir
from distillapp.core.runs.models import ENDED_STATUSES, RunStatus
from distillapp.core.runs.services import run_cancel, run_enqueue, run_requeue, run_resume
from distillapp.datasets.models import DatasetVersion
from distillapp.generation.models import Teacher, TeacherKind
from distillapp.projects.models import Project
from distillapp.training.models import (
    BaseModel,
    BaseModelSource,
    Method,
    QuantizationRun,
    TrainingArtifact,
    TrainingRun,
)
from distillapp.training.settings_schema import clean_settings

_HUB_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")


def hf_cache_dir() -> Path:
    """Where hub ids resolve from on workers (never downloaded by Distillery itself)."""
    return Path(settings.MEDIA_ROOT) / "hf-cache"


def _clean_base_model(base_model: BaseModel) -> None:
    errors: dict[str, list[str]] = {}
    base_model.name = (base_model.name or "").strip()
    base_model.path = (base_model.path or "").strip()
    base_model.hub_id = (base_model.hub_id or "").strip()
    if not base_model.name:
        errors["name"] = ["Give the base model a name."]
    elif len(base_model.name) > 120 or "\x00" in base_model.name:
        errors["name"] = ["At most 120 characters, no NUL."]
    elif (
        BaseModel.objects.filter(project_id=base_model.project_id, name=base_model.name)
        .exclude(pk=base_model.pk)
        .exists()
    ):
        errors["name"] = ["A base model with this name already exists in the project."]
    if bool(base_model.path) == bool(base_model.hub_id):
        errors["path"] = ["Enter either a folder (path) or a Hugging Face Hub id, not both."]
    elif base_model.path:
        base_model.source = BaseModelSource.PATH
        if len(base_model.path) > 1000:
            errors["path"] = ["At most 1,000 characters."]
        else:
            try:
                check_model_path(base_model.path, org_id=base_model.project.org_id)
            except ModelPathRefused as exc:
                errors["path"] = [str(exc)]
    else:
        base_model.source = BaseModelSource.HUB
        hub = base_model.hub_id
        if (
            len(hub) > 200
            or not set(hub) <= _HUB_ID_CHARS
            or hub.count("/") > 1
            or ".." in hub
            or hub.startswith(("/", ".", "-"))
        ):
            errors["hub_id"] = ["Enter a hub id such as Qwen/Qwen2.5-0.5B-Instruct."]
    if errors:
        raise ValidationError(errors)


def base_model_create(
    *, project: Project, user: Any, name: str, path: str = "", hub_id: str = ""
) -> BaseModel:
    """Add a base model and queue its inspection (gpu queue)."""
    base_model = BaseModel(
        project=project,
        name=name,
        path=path,
        hub_id=hub_id,
        created_by=user,
        message="Waiting for a worker to inspect it.",
    )
    _clean_base_model(base_model)
    with transaction.atomic():
        try:
            base_model.save()
        except IntegrityError:
            raise ValidationError(
                {"name": ["A base model with this name already exists in the project."]}
            ) from None
        run_enqueue(base_model)
        audit_record(
            org=project.org,
            actor=user,
            action="base_model.add",
            target=base_model.name,
            details={
                "base_model": base_model.pk,
                "source": base_model.source,
                "location": base_model.location,
            },
        )
    return base_model


def base_model_update(
    *,
    base_model: BaseModel,
    name: str | None = None,
    path: str | None = None,
    hub_id: str | None = None,
) -> BaseModel:
    """Rename, or point at another folder or hub id (which inspects it again)."""
    if base_model.is_active:
        raise ValidationError("The base model is being inspected; wait for the inspection to end.")
    moved = False
    if name is not None:
        base_model.name = name
    if path is not None or hub_id is not None:
        new_path, new_hub = path or "", hub_id or ""
        moved = (new_path, new_hub) != (base_model.path, base_model.hub_id)
        base_model.path, base_model.hub_id = new_path, new_hub
    if moved and base_model.runs.exists():
        raise ValidationError(
            {"path": ["Training runs used this base model; add a new one instead of moving it."]}
        )
    _clean_base_model(base_model)
    base_model.save()
    if moved:
        base_model_inspect(base_model=base_model)
    return base_model


def base_model_inspect(*, base_model: BaseModel) -> BaseModel:
    """Inspect again (after the folder changed, or a teacher was added). Idempotent while queued."""
    if base_model.is_active:
        return base_model
    return run_requeue(
        base_model,
        from_statuses=tuple(ENDED_STATUSES),
        refusal="The base model is being inspected.",
        inspection={},
        resolved_path="",
        done=0,
        total=0,
    )


def base_model_delete(*, base_model: BaseModel, user: Any) -> None:
    if base_model.runs.exists():
        raise ValidationError("Training runs used this base model; it cannot be deleted.")
    if base_model.status in (RunStatus.RUNNING, RunStatus.CANCELLING):
        raise ValidationError("The base model is being inspected; wait for it to end.")
    with transaction.atomic():
        audit_record(
            org=base_model.project.org,
            actor=user,
            action="base_model.delete",
            target=base_model.name,
            details={"base_model": base_model.pk, "location": base_model.location},
        )
        base_model.delete()


def run_folder(run: TrainingRun) -> Path:
    return Path(settings.MEDIA_ROOT) / run.out_dir


def _kd_teacher(
    *, project: Project, version: DatasetVersion, teacher_id: int | None
) -> Teacher | None:
    """The local teacher whose tokenizer the kd check uses: the one named, else the single
    hf_local teacher among the version's source jobs."""
    local = Teacher.objects.filter(project=project, kind=TeacherKind.HF_LOCAL)
    if teacher_id is not None:
        return local.filter(pk=teacher_id).first()
    ids = {
        (job.get("teacher_snapshot") or {}).get("teacher_id")
        for job in (version.lineage or {}).get("jobs", [])
        if (job.get("teacher_snapshot") or {}).get("kind") == TeacherKind.HF_LOCAL
    }
    candidates = list(local.filter(pk__in=[i for i in ids if i]))
    return candidates[0] if len(candidates) == 1 else None


def kd_refusal(
    *, version: DatasetVersion, base_model: BaseModel, teacher: Teacher | None
) -> str | None:
    """Why `kd` cannot train on this version with this base model, or None when it can."""
    if not (version.counts or {}).get("kd_rows"):
        return (
            "This dataset version has no rows with the teacher's token ids and top-k "
            "(a local teacher generating with top-k writes them); use sft."
        )
    if teacher is None:
        return "Choose the local teacher whose tokenizer produced the top-k (teacher_id)."
    report = (base_model.inspection or {}).get("teachers", {}).get(str(teacher.pk))
    if report is None:
        return (
            f"The base model was inspected before teacher “{teacher.name}” was checked against "
            "it; inspect the base model again."
        )
    if not report.get("kd"):
        return str(report.get("reason") or "The vocabularies differ; use sft.")
    return None


def training_run_launch(
    *,
    project: Project,
    user: Any,
    dataset_version_id: Any,
    base_model_id: Any,
    method: str = Method.SFT,
    teacher_id: Any = None,
    config: dict[str, Any] | None = None,
) -> TrainingRun:
    """Queue a training run. Every problem is a ValidationError naming its field
    (`dataset_version_id`, `base_model_id`, `method`, `teacher_id`, or a TrainConfig name).
    `config` holds the settings people chose by their TrainConfig names; the rest are defaults."""
    from distillapp.training.selectors import training_preview

    errors: dict[str, list[str]] = {}
    version = _by_id(DatasetVersion.objects.filter(project=project), dataset_version_id)
    if version is None:
        errors["dataset_version_id"] = ["Choose a dataset version of this project."]
    elif version.status != RunStatus.SUCCEEDED:
        errors["dataset_version_id"] = ["This dataset version is not built yet."]
    elif not (version.counts or {}).get("train"):
        errors["dataset_version_id"] = ["This dataset version has no training rows."]
    base_model = _by_id(BaseModel.objects.filter(project=project), base_model_id)
    if base_model is None:
        errors["base_model_id"] = ["Choose a base model of this project."]
    elif not base_model.is_ready:
        errors["base_model_id"] = [
            "This base model has not been inspected successfully"
            + (f": {base_model.message}" if base_model.status == RunStatus.FAILED else ".")
        ]
    if method not in Method.values:
        errors["method"] = ["Choose sft or kd."]
    teacher = None
    if teacher_id not in (None, ""):
        teacher = _by_id(
            Teacher.objects.filter(project=project, kind=TeacherKind.HF_LOCAL), teacher_id
        )
        if teacher is None:
            errors["teacher_id"] = ["Choose a local (hf_local) teacher of this project."]
    values = config
    try:
        config = clean_settings(method=method, values=values)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        config = {}
    if method == Method.KD and version is not None and base_model is not None and not errors:
        if teacher is None:
            teacher = _kd_teacher(project=project, version=version, teacher_id=None)
        reason = kd_refusal(version=version, base_model=base_model, teacher=teacher)
        if reason:
            errors["teacher_id" if teacher is None and "teacher_id" in reason else "method"] = [
                reason
            ]
        elif teacher is not None:
            try:
                check_model_path(teacher.model_path, org_id=project.org_id)
            except ModelPathRefused as exc:
                errors["teacher_id"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    assert version is not None and base_model is not None
    preview = training_preview(version=version, base_model=base_model, method=method, config=config)
    with transaction.atomic():
        run = TrainingRun.objects.create(
            project=project,
            dataset_version=version,
            base_model=base_model,
            method=method,
            teacher=teacher if method == Method.KD else None,
            config=config,
            preview=preview,
            created_by=user,
            total=preview.get("total_steps") or 0,
            message="Waiting for a gpu worker.",
        )
        run.out_dir = str(
            (org_artifacts_dir(project.org_id) / "training" / str(run.pk)).relative_to(
                settings.MEDIA_ROOT
            )
        )
        run.save(update_fields=["out_dir"])
        run_enqueue(run)
        audit_record(
            org=project.org,
            actor=user,
            action="training.launch",
            target=f"run {run.pk}",
            details={
                "run": run.pk,
                "dataset_version": version.pk,
                "base_model": base_model.pk,
                "method": method,
                "config": config,
            },
        )
    return run


def _by_id(queryset: Any, value: Any) -> Any:
    try:
        pk = int(value)
    except (TypeError, ValueError):
        return None
    if not 1 <= pk <= 2**63 - 1:
        return None
    return queryset.filter(pk=pk).first()


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Queued → cancelled; running → cancelling: the child checkpoints and exits, the run ends
    cancelled and can be resumed from that checkpoint."""
    return run_cancel(run)


def training_run_resume(*, run: TrainingRun) -> TrainingRun:
    """Cancelled or failed → queued; the next claim continues from the latest checkpoint."""
    return run_resume(run)


def training_run_quantize(*, run: TrainingRun, user: Any, scheme: str = "int8") -> QuantizationRun:
    """Queue torchao weight-only quantisation of the run's merged (full-precision) model."""
    if scheme not in ("int8", "int4"):
        raise ValidationError({"scheme": ["Choose int8 or int4."]})
    if run.status != RunStatus.SUCCEEDED:
        raise ValidationError("Only a finished (succeeded) run can be quantised.")
    if not TrainingArtifact.objects.filter(run=run, name__in=("merged", "model")).exists():
        raise ValidationError("This run has no merged model to quantise.")
    if (
        QuantizationRun.objects.filter(training_run=run, scheme=scheme)
        .exclude(status__in=(RunStatus.FAILED, RunStatus.CANCELLED))
        .exists()
    ):
        raise ValidationError({"scheme": [f"An {scheme} quantisation of this run exists already."]})
    with transaction.atomic():
        quantization = QuantizationRun.objects.create(
            project=run.project,
            training_run=run,
            scheme=scheme,
            created_by=user,
            message="Waiting for a gpu worker.",
        )
        run_enqueue(quantization)
        audit_record(
            org=run.project.org,
            actor=user,
            action="training.quantize",
            target=f"run {run.pk}",
            details={"run": run.pk, "scheme": scheme},
        )
    return quantization
