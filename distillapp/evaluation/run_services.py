"""Writes of eval runs: create (models × eval sets, frozen as specs), cancel, resume, and the
conditional writes a worker makes (answers, judgements, results), every one of them on its claim.

Answers are EvalAnswer rows, never Completions: no dataset build, review queue or generation
job reads them (tests/evaluation/test_eval_runs.py checks the dataset selector).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.services import (
    ClaimLost,
    run_cancel,
    run_enqueue,
    run_resume,
)
from distillapp.evaluation.models import EvalAnswer, EvalJudgement, EvalRun, EvalSet
from distillapp.generation.models import Teacher, TeacherKind
from distillapp.projects.models import Project
from distillapp.training.models import BaseModel, TrainingArtifact, TrainingRun

ARTIFACTS = ("adapter", "merged", "model", "quantized-int8")
DEFAULT_DECODING: dict[str, Any] = {"temperature": 0.0, "max_tokens": 256}
DECODING_KEYS = ("temperature", "top_p", "max_tokens", "stop", "seed", "system_prompt")
MAX_MODELS = 12


@dataclass(frozen=True)
class ModelChoice:
    """One model to evaluate: a teacher, a base model, or a student (a training run's artefact);
    `decoding` overrides the run's shared decoding for this model only."""

    kind: str  # teacher | base_model | student
    id: int
    artifact: str = ""
    decoding: dict[str, Any] = field(default_factory=dict)


def _decoding(raw: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if key not in DECODING_KEYS:
            raise ValidationError({"decoding": f"Unknown decoding setting {key!r}."})
        if value is None or value == "":
            continue
        if key in ("temperature", "top_p"):
            value = float(value)
            if not 0 <= value <= 2:
                raise ValidationError({"decoding": f"{key} must be between 0 and 2."})
        elif key in ("max_tokens", "seed"):
            value = int(value)
            if key == "max_tokens" and not 1 <= value <= 32768:
                raise ValidationError({"decoding": "max_tokens must be between 1 and 32768."})
        elif key == "stop":
            value = [value] if isinstance(value, str) else [str(v) for v in value][:4]
        else:
            value = str(value)[:4000]
        out[key] = value
    return out


def _teacher_spec(teacher: Teacher) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "key": f"teacher-{teacher.pk}",
        "label": teacher.name,
        "role": "teacher",
        "teacher_id": teacher.pk,
    }
    if teacher.kind == TeacherKind.OPENAI:
        spec.update(
            kind="api",
            base_url=teacher.base_url,
            model=teacher.model,
            concurrency=teacher.concurrency,
            requests_per_minute=teacher.requests_per_minute,
            tokens_per_minute=teacher.tokens_per_minute,
            price_input_per_m=str(teacher.price_input_per_m),
            price_output_per_m=str(teacher.price_output_per_m),
        )
    else:
        spec.update(
            kind="local",
            path=teacher.model_path,
            device=teacher.device,
            dtype=teacher.dtype,
            batch_size=teacher.batch_size,
        )
    return spec


def _base_spec(base: BaseModel) -> dict[str, Any]:
    if not base.is_ready:
        raise ValidationError({"models": f"Base model {base.name} has not been inspected yet."})
    return {
        "key": f"base-{base.pk}",
        "label": base.name,
        "role": "base",
        "kind": "local",
        "base_model_id": base.pk,
        "path": base.resolved_path,
        "device": "auto",
        "dtype": "auto",
        "batch_size": 16,
    }


def _student_spec(run: TrainingRun, artifact_name: str) -> dict[str, Any]:
    if run.status != RunStatus.SUCCEEDED:
        raise ValidationError({"models": f"Training run {run.pk} has not succeeded."})
    artifact = TrainingArtifact.objects.filter(run=run, name=artifact_name).first()
    if artifact is None:
        raise ValidationError({"models": f"Training run {run.pk} has no {artifact_name} artefact."})
    folder = str(Path(settings.MEDIA_ROOT) / artifact.path)
    base = run.base_model
    spec: dict[str, Any] = {
        "key": f"student-{run.pk}-{artifact_name}",
        "label": f"Student {run.pk} ({artifact_name})",
        "role": "student",
        "kind": "local",
        "training_run_id": run.pk,
        "artifact": artifact_name,
        "dataset_version_id": run.dataset_version_id,
        "base_model_id": base.pk,
        "base_key": f"base-{base.pk}",
        "device": "auto",
        "dtype": "auto",
        "batch_size": 16,
    }
    if artifact_name == "adapter":
        spec.update(path=base.resolved_path or base.path, adapter=folder)
    else:
        spec["path"] = folder
    return spec


def _specs(project: Project, choices: Sequence[ModelChoice]) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for choice in choices:
        if choice.kind == "teacher":
            teacher = Teacher.objects.filter(project=project, pk=choice.id).first()
            if teacher is None:
                raise ValidationError({"models": f"No teacher {choice.id} in this project."})
            spec = _teacher_spec(teacher)
        elif choice.kind == "base_model":
            base = BaseModel.objects.filter(project=project, pk=choice.id).first()
            if base is None:
                raise ValidationError({"models": f"No base model {choice.id} in this project."})
            spec = _base_spec(base)
        elif choice.kind == "student":
            if choice.artifact not in ARTIFACTS:
                raise ValidationError(
                    {"models": f"artifact must be one of {', '.join(ARTIFACTS)}."}
                )
            run = (
                TrainingRun.objects.select_related("base_model")
                .filter(project=project, pk=choice.id)
                .first()
            )
            if run is None:
                raise ValidationError({"models": f"No training run {choice.id} in this project."})
            spec = _student_spec(run, choice.artifact)
        else:
            raise ValidationError({"models": "kind must be teacher, base_model or student."})
        if any(s["key"] == spec["key"] for s in specs):
            raise ValidationError({"models": f"{spec['label']} is chosen twice."})
        spec["decoding"] = _decoding(choice.decoding)
        specs.append(spec)
    return specs


def _lineage(eval_sets: Sequence[EvalSet], specs: list[dict[str, Any]]) -> dict[str, Any]:
    from distillapp.datasets.models import DatasetVersion

    version_ids = {s["dataset_version_id"] for s in specs if s.get("dataset_version_id")}
    versions = DatasetVersion.objects.filter(pk__in=version_ids).select_related("dataset")
    run_ids = {s["training_run_id"] for s in specs if s.get("training_run_id")}
    runs = TrainingRun.objects.filter(pk__in=run_ids).select_related("base_model")
    base_ids = {s["base_model_id"] for s in specs if s.get("base_model_id")}
    return {
        "eval_sets": [
            {"id": s.pk, "name": s.name, "kind": s.kind, "sha256": s.sha256, "items": s.item_count}
            for s in eval_sets
        ],
        "dataset_versions": [
            {"id": v.pk, "name": str(v), "sha256": v.sha256, "rows": (v.counts or {}).get("rows")}
            for v in versions
        ],
        "training_runs": [
            {
                "id": r.pk,
                "method": r.method,
                "dataset_version_id": r.dataset_version_id,
                "base_model": r.base_model.name,
            }
            for r in runs
        ],
        "base_models": [
            {"id": b.pk, "name": b.name, "location": b.location}
            for b in BaseModel.objects.filter(pk__in=base_ids)
        ],
    }


def eval_run_create(
    *,
    project: Project,
    models: Sequence[ModelChoice],
    eval_set_ids: Sequence[int],
    judge_teacher_id: int | None = None,
    baseline_key: str = "",
    decoding: dict[str, Any] | None = None,
    criteria: str = "",
    name: str = "",
    user: Any = None,
) -> EvalRun:
    """A queued eval run of `models` on the eval sets, sent to `teacher` when every model is an
    API teacher and to `gpu` otherwise. The baseline (what the judge compares against) is the
    given key or the first teacher chosen. Not idempotent: each call adds a run."""
    if not models:
        raise ValidationError({"models": "Choose at least one model."})
    if len(models) > MAX_MODELS:
        raise ValidationError({"models": f"At most {MAX_MODELS} models per run."})
    eval_sets = list(EvalSet.objects.filter(project=project, pk__in=list(eval_set_ids)))
    if not eval_sets or len(eval_sets) != len(set(eval_set_ids)):
        raise ValidationError({"eval_sets": "Choose eval sets of this project."})
    specs = _specs(project, models)
    keys = [s["key"] for s in specs]
    if baseline_key and baseline_key not in keys:
        raise ValidationError({"baseline_key": "The baseline must be one of the chosen models."})
    if not baseline_key:
        baseline_key = next((s["key"] for s in specs if s["role"] == "teacher"), "")
    judge: dict[str, Any] = {}
    if judge_teacher_id is not None:
        teacher = Teacher.objects.filter(project=project, pk=judge_teacher_id).first()
        if teacher is None or teacher.kind != TeacherKind.OPENAI:
            raise ValidationError({"judge_teacher_id": "The judge must be an API teacher here."})
        if not baseline_key or len(specs) < 2:
            raise ValidationError(
                {"judge_teacher_id": "A judge compares models with a teacher: choose both."}
            )
        from workers.engine.evaluation.pairwise import DEFAULT_CRITERIA, PAIRWISE_SYSTEM_PROMPT

        judge = {
            "teacher_id": teacher.pk,
            "name": teacher.name,
            "base_url": teacher.base_url,
            "model": teacher.model,
            "criteria": (criteria or DEFAULT_CRITERIA).strip()[:4000],
            "system_prompt": PAIRWISE_SYSTEM_PROMPT,
            "concurrency": min(teacher.concurrency, settings.FILTERS_JUDGE_CONCURRENCY),
        }
    with transaction.atomic():
        run = EvalRun.objects.create(
            project=project,
            name=" ".join((name or "").split())[:200],
            model_specs=specs,
            decoding={**DEFAULT_DECODING, **_decoding(decoding)},
            baseline_key=baseline_key,
            judge=judge,
            lineage=_lineage(eval_sets, specs),
            created_by=user if getattr(user, "pk", None) else None,
        )
        run.eval_sets.set(eval_sets)
        run_enqueue(run)
    return run


def eval_run_cancel(*, run: EvalRun) -> EvalRun:
    """Queued → cancelled; running → cancelling (the worker stops at its next heartbeat and
    keeps every answer written). ValidationError for an ended run."""
    return run_cancel(run)


def eval_run_resume(*, run: EvalRun) -> EvalRun:
    """Cancelled or failed → queued: only the missing answers and judgements are made again."""
    return run_resume(run)


def _owned(run_id: int, token: str) -> None:
    if not EvalRun.objects.filter(pk=run_id, claim_token=token).exists():
        raise ClaimLost(run_id)


ANSWER_FIELDS = [
    "ok",
    "text",
    "error",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "batch_size",
    "batch_ms",
    "cost_usd",
]


@dataclass(frozen=True)
class AnswerIn:
    item_id: int
    ok: bool
    text: str = ""
    error: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    batch_size: int = 1
    batch_ms: int = 0
    cost_usd: Decimal = Decimal(0)


def eval_answers_write(
    *, run_id: int, token: str, model_key: str, answers: Iterable[AnswerIn]
) -> int:
    """Upsert answers on (run, model, item): a resumed or taken-over run overwrites, never
    repeats. Raises ClaimLost (writing nothing) when this worker no longer owns the run."""
    rows = [
        EvalAnswer(
            run_id=run_id,
            model_key=model_key,
            item_id=a.item_id,
            ok=a.ok,
            text=a.text,
            error=a.error[:4000],
            finish_reason=a.finish_reason[:32],
            prompt_tokens=a.prompt_tokens,
            completion_tokens=a.completion_tokens,
            latency_ms=a.latency_ms,
            batch_size=a.batch_size,
            batch_ms=a.batch_ms,
            cost_usd=a.cost_usd,
        )
        for a in answers
    ]
    if not rows:
        return 0
    with transaction.atomic():
        _owned(run_id, token)
        EvalAnswer.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["run", "model_key", "item"],
            update_fields=ANSWER_FIELDS,
        )
    return len(rows)


def eval_answers_batch_time(
    *, run_id: int, token: str, model_key: str, item_ids: Sequence[int], wall_ms: int
) -> int:
    """Give the answers of one concurrent phase their share of its wall time, as if the phase
    were len/batch_size batches in a row, so batched tokens/s = the phase's tokens / wall time.
    Answers of a phase that never finished keep batch_ms = 0 and count in no throughput."""
    if not item_ids:
        return 0
    share = max(1, round(wall_ms / len(item_ids)))
    with transaction.atomic():
        _owned(run_id, token)
        return EvalAnswer.objects.filter(
            run_id=run_id, model_key=model_key, item_id__in=list(item_ids)
        ).update(batch_ms=F("batch_size") * share)


def eval_judgements_write(*, run_id: int, token: str, rows: list[EvalJudgement]) -> int:
    """Upsert judgements on (run, model, item), on this worker's claim."""
    if not rows:
        return 0
    with transaction.atomic():
        _owned(run_id, token)
        EvalJudgement.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["run", "model_key", "item"],
            update_fields=[
                "candidate_first",
                "baseline_first",
                "rationale_candidate_first",
                "rationale_baseline_first",
                "error",
                "outcome",
            ],
        )
    return len(rows)
