"""Reads of training for pages and the API: lists, a run's summary (progress, ETA, tokens/s,
device, peak memory, log tail, truncation report, queue position), metrics since a step, the
launch form's choices and its preview of steps and tokens."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet

from distillapp.core.runs.models import RunStatus
from distillapp.datasets.models import DatasetVersion
from distillapp.generation.models import Teacher, TeacherKind
from distillapp.projects.models import Project
from distillapp.training.models import (
    BaseModel,
    Method,
    QuantizationRun,
    TrainingArtifact,
    TrainingMetric,
    TrainingRun,
)

LOG_TAIL_LINES = 200


def base_models_for_project(*, project: Project) -> QuerySet[BaseModel]:
    return BaseModel.objects.filter(project=project).select_related("created_by")


def base_model_teachers(*, base_model: BaseModel) -> list[dict[str, Any]]:
    """For each local teacher of the project: whether kd is possible with this base model and,
    if not, why. sft always works."""
    report = (base_model.inspection or {}).get("teachers", {})
    rows = []
    for teacher in Teacher.objects.filter(
        project_id=base_model.project_id, kind=TeacherKind.HF_LOCAL
    ):
        entry = report.get(str(teacher.pk))
        if entry is None:
            kd, reason = None, "Not checked yet: inspect the base model again."
        else:
            kd, reason = bool(entry.get("kd")), str(entry.get("reason") or "")
        rows.append({"teacher": teacher, "teacher_id": teacher.pk, "name": teacher.name, "kd": kd,
                     "reason": reason, "sft": True})  # fmt: skip
    return rows


def training_runs_for_project(*, project: Project) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.filter(project=project).select_related(
        "dataset_version", "dataset_version__dataset", "base_model", "created_by"
    )


def training_form_choices(*, project: Project) -> dict[str, Any]:
    """What the launch form offers: built versions, inspected base models, local teachers."""
    return {
        "versions": list(
            DatasetVersion.objects.filter(project=project, status=RunStatus.SUCCEEDED)
            .select_related("dataset")
            .order_by("dataset__name", "-number")
        ),
        "base_models": [b for b in base_models_for_project(project=project) if b.is_ready],
        "teachers": list(Teacher.objects.filter(project=project, kind=TeacherKind.HF_LOCAL)),
        "methods": Method.choices,
    }


def _train_rows(version: DatasetVersion, method: str) -> int:
    counts = version.counts or {}
    if method != Method.KD:
        return int(counts.get("train") or 0)
    path = Path(settings.MEDIA_ROOT) / version.path / "train_kd.jsonl"
    if version.path and path.is_file():
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    return int(counts.get("kd_rows") or 0)


def processes_per_run() -> int:
    """How many processes a run trains with, as far as the web knows (the worker decides)."""
    return max(1, int(getattr(settings, "TRAINING_PROCESSES", 0) or 1))


def training_preview(
    *, version: DatasetVersion, base_model: BaseModel | None, method: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Steps and (estimated) tokens a launch with these settings would train on."""
    rows = _train_rows(version, method)
    processes = processes_per_run()
    per_step = int(config.get("batch_size", 8)) * int(config.get("grad_accum", 1)) * processes
    steps_per_epoch = math.ceil(rows / per_step) if rows else 0
    max_steps = int(config.get("max_steps", -1))
    epochs = float(config.get("epochs", 1.0))
    total = max_steps if max_steps > 0 else math.ceil(steps_per_epoch * epochs)
    counts = version.counts or {}
    chars = int(counts.get("prompt_chars") or 0) + int(counts.get("target_chars") or 0)
    all_rows = int(counts.get("rows") or 0)
    cpt = float(((base_model.inspection or {}).get("chars_per_token") if base_model else 0) or 4.0)
    tokens_per_row = chars / all_rows / cpt if all_rows else 0.0
    examples = total * per_step
    return {
        "rows": rows,
        "processes": processes,
        "examples_per_step": per_step,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "epochs": round(examples / rows, 3) if rows else 0.0,
        "tokens_per_epoch": round(rows * tokens_per_row),
        "tokens_total": round(examples * tokens_per_row),
        "chars_per_token": cpt,
        "estimated": True,  # tokens: characters / the base model's characters per token
    }


def training_queue_position(*, run: TrainingRun) -> int | None:
    """1 + the gpu-queue training runs ahead of a queued run (running ones and those queued
    earlier); None when the run is not queued."""
    if run.status != RunStatus.QUEUED:
        return None
    ahead = TrainingRun.objects.filter(
        Q(status__in=(RunStatus.RUNNING, RunStatus.CANCELLING))
        | Q(status=RunStatus.QUEUED, created_at__lt=run.created_at)
        | Q(status=RunStatus.QUEUED, created_at=run.created_at, pk__lt=run.pk)
    ).count()
    return ahead + 1


def training_metrics(
    *, run: TrainingRun, since_step: int | None = None, limit: int = 5000
) -> list[TrainingMetric]:
    """Metric rows after `since_step` (all when None), in step order: what a chart appends."""
    rows = TrainingMetric.objects.filter(run=run)
    if since_step is not None:
        rows = rows.filter(step__gt=since_step)
    return list(rows.order_by("step")[:limit])


def training_artifacts(*, run: TrainingRun) -> list[TrainingArtifact]:
    return list(TrainingArtifact.objects.filter(run=run).order_by("created_at", "name"))


def training_quantizations(*, run: TrainingRun) -> list[QuantizationRun]:
    return list(QuantizationRun.objects.filter(training_run=run))


def training_run_summary(*, run: TrainingRun) -> dict[str, Any]:
    """Everything the run page shows beside the chart."""
    metrics = run.metrics or {}
    result = run.result or {}
    last = (
        TrainingMetric.objects.filter(run=run, train_loss__isnull=False).order_by("-step").first()
    )
    last_eval = (
        TrainingMetric.objects.filter(run=run, eval_loss__isnull=False).order_by("-step").first()
    )
    return {
        "status": run.status,
        "message": run.message,
        "step": run.done,
        "total_steps": run.total,
        "percent": run.percent,
        "eta_s": metrics.get("eta_s") if run.is_active else None,
        "tokens_per_s": metrics.get("tokens_per_s"),
        "device": metrics.get("device"),
        "peak_memory_mb": metrics.get("peak_memory_mb"),
        "processes": metrics.get("processes"),
        "train_loss": result.get("train_loss", last.train_loss if last else None),
        "eval_loss": result.get("eval_loss", last_eval.eval_loss if last_eval else None),
        "truncation": result.get("truncation") or metrics.get("truncation") or {},
        "queue_position": training_queue_position(run=run),
        "log_tail": run.log_tail.splitlines()[-LOG_TAIL_LINES:],
        "preview": run.preview,
    }
