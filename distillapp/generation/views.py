"""Pages of teachers and generation jobs. GET: any member (viewer+); POST: admin; outsiders 404."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from distillapp.accounts.models import Role, role_at_least
from distillapp.core.http import HtmxHttpRequest, parse_int, polled_partial
from distillapp.core.http import form_errors as _form_errors
from distillapp.core.runs.services import run_is_stale
from distillapp.generation import selectors, services
from distillapp.generation.forms import (
    decoding_from_post,
    metadata_from_text,
    teacher_kwargs_from_post,
)
from distillapp.generation.models import GenerationJob, JobStatus, Teacher, TeacherKind
from distillapp.generation.probe import teacher_test
from distillapp.generation.services import DEVICES, DTYPES
from distillapp.projects.access import get_project_for_user, get_scoped_object
from distillapp.prompts.models import PromptSet


def form_errors(exc: ValidationError) -> dict[str, list[str]]:
    """Field errors; errors not tied to a field under "general" (templates cannot read __all__)."""
    errors = _form_errors(exc)
    if "__all__" in errors:
        errors["general"] = errors.pop("__all__")
    return errors


def _teacher(
    request: HtmxHttpRequest, teacher_id: int, role: str = Role.VIEWER
) -> tuple[Teacher, Any]:
    return get_scoped_object(request.user, Teacher.objects.all(), teacher_id, role)


def _job(
    request: HtmxHttpRequest, job_id: int, role: str = Role.VIEWER
) -> tuple[GenerationJob, Any]:
    return get_scoped_object(
        request.user,
        GenerationJob.objects.select_related("prompt_set", "teacher", "created_by"),
        job_id,
        role,
    )


def _form_ctx(**extra: Any) -> dict[str, Any]:
    return {"kinds": TeacherKind.choices, "devices": DEVICES, "dtypes": DTYPES, **extra}


# --- teachers -----------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def teacher_new(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {
        "kind": request.GET.get("kind", TeacherKind.OPENAI),
        "concurrency": 16,
        "batch_size": 16,
    }
    if request.method == "POST":
        values = request.POST.dict()
        values.pop("api_key", None)  # never echo a key back into the page
        try:
            teacher = services.teacher_create(
                project=project,
                kind=request.POST.get("kind", ""),
                api_key=request.POST.get("api_key", ""),
                **teacher_kwargs_from_post(request.POST),
            )
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            messages.success(
                request, f"Added teacher {teacher.name}. Test it before launching a job."
            )
            return redirect("teacher_detail", teacher_id=teacher.pk)
    return render(
        request,
        "generation/teacher_form.html",
        _form_ctx(project=project, teacher=None, values=values, errors=errors),
        status=422 if errors else 200,
    )


@login_required
@require_GET
def teacher_detail(request: HtmxHttpRequest, teacher_id: int) -> HttpResponse:
    teacher, membership = _teacher(request, teacher_id)
    jobs = (
        GenerationJob.objects.filter(teacher=teacher)
        .select_related("prompt_set")
        .order_by("-created_at")[:20]
    )
    return render(
        request,
        "generation/teacher_detail.html",
        {
            "teacher": teacher,
            "project": teacher.project,
            "jobs": jobs,
            "can_manage": role_at_least(membership.role, Role.ADMIN),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def teacher_edit(request: HtmxHttpRequest, teacher_id: int) -> HttpResponse:
    teacher, _m = _teacher(request, teacher_id, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {
        "name": teacher.name,
        "kind": teacher.kind,
        "base_url": teacher.base_url,
        "model": teacher.model,
        "model_path": teacher.model_path,
        "device": teacher.device,
        "dtype": teacher.dtype,
        "batch_size": teacher.batch_size,
        "concurrency": teacher.concurrency,
        "requests_per_minute": teacher.requests_per_minute or "",
        "tokens_per_minute": teacher.tokens_per_minute or "",
        "price_input_per_m": teacher.price_input_per_m.normalize(),
        "price_output_per_m": teacher.price_output_per_m.normalize(),
        **{k: v for k, v in (teacher.decoding or {}).items() if k != "stop"},
        "stop": "\n".join((teacher.decoding or {}).get("stop") or []),
    }
    if request.method == "POST":
        values = request.POST.dict()
        values.pop("api_key", None)
        new_key = request.POST.get("api_key", "").strip()
        api_key = "" if request.POST.get("clear_api_key") else (new_key or None)
        kwargs = teacher_kwargs_from_post(request.POST)
        try:
            services.teacher_update(teacher=teacher, api_key=api_key, **kwargs)
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            messages.success(
                request,
                f"Saved {teacher.name}. Jobs already launched keep the settings they ran with.",
            )
            return redirect("teacher_detail", teacher_id=teacher.pk)
    values["kind"] = teacher.kind
    return render(
        request,
        "generation/teacher_form.html",
        _form_ctx(project=teacher.project, teacher=teacher, values=values, errors=errors),
        status=422 if errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def teacher_delete(request: HtmxHttpRequest, teacher_id: int) -> HttpResponse:
    teacher, _m = _teacher(request, teacher_id, Role.ADMIN)
    project = teacher.project
    error = ""
    if request.method == "POST":
        name = teacher.name
        try:
            services.teacher_delete(teacher=teacher)
        except ValidationError as exc:
            error = exc.messages[0]
        else:
            messages.success(request, f"Deleted teacher {name}. Its jobs and completions are kept.")
            return redirect("project_detail", project_id=project.pk)
    return render(
        request,
        "generation/teacher_delete.html",
        {"teacher": teacher, "project": project, "error": error},
        status=422 if error else 200,
    )


@login_required
@require_POST
def teacher_test_view(request: HtmxHttpRequest, teacher_id: int) -> HttpResponse:
    teacher, _m = _teacher(request, teacher_id, Role.ADMIN)
    result = teacher_test(teacher=teacher, prompt=request.POST.get("prompt", ""))
    ctx = {
        "teacher": teacher,
        "project": teacher.project,
        "result": result,
        "prompt": request.POST.get("prompt", ""),
        "can_manage": True,
        "jobs": GenerationJob.objects.filter(teacher=teacher).select_related("prompt_set")[:20],
    }
    if request.htmx:
        return render(request, "generation/teacher_detail.html#test-result", ctx)
    return render(request, "generation/teacher_detail.html", ctx)


# --- jobs ---------------------------------------------------------------------------------------


def launch_context(
    *,
    project: Any,
    values: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    return {
        "project": project,
        "teachers": list(selectors.teachers_for_project(project=project)),
        "prompt_sets": list(PromptSet.objects.filter(project=project).order_by("-created_at")),
        "values": values or {},
        "errors": errors or {},
    }


@login_required
@require_http_methods(["GET", "POST"])
def job_launch(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = request.GET.dict()
    if request.method == "POST":
        values = request.POST.dict()
        prompt_set_id = parse_int(request.POST.get("prompt_set"))
        teacher_id = parse_int(request.POST.get("teacher"))
        # pk=None can match no row, so a missing/invalid id is simply "not found".
        prompt_set = (
            PromptSet.objects.filter(pk=prompt_set_id, project=project).first()
            if prompt_set_id is not None
            else None
        )
        teacher = (
            Teacher.objects.filter(pk=teacher_id, project=project).first()
            if teacher_id is not None
            else None
        )
        if prompt_set is None:
            errors["prompt_set"] = ["Choose a prompt set."]
        if teacher is None:
            errors["teacher"] = ["Choose a teacher."]
        if not errors:
            assert prompt_set is not None and teacher is not None
            try:
                job = services.generation_job_start(
                    project=project,
                    prompt_set=prompt_set,
                    teacher=teacher,
                    samples_per_prompt=request.POST.get("samples_per_prompt", "").strip() or None,  # type: ignore[arg-type]
                    q=request.POST.get("q", ""),
                    metadata=metadata_from_text(request.POST.get("metadata", "")),
                    overrides=decoding_from_post(request.POST, prefix="override_"),
                    created_by=request.user,
                )
            except ValidationError as exc:
                errors = {k.removeprefix("overrides."): v for k, v in form_errors(exc).items()}
            else:
                messages.success(
                    request, f"Launched job {job.pk}: {job.total} completions to generate."
                )
                return redirect("generation_job_detail", job_id=job.pk)
    return render(
        request,
        "generation/job_launch.html",
        launch_context(project=project, values=values, errors=errors),
        status=422 if errors else 200,
    )


def _job_ctx(job: GenerationJob, membership: Any) -> dict[str, Any]:
    return {
        "job": job,
        "project": job.project,
        "snapshot": job.teacher_snapshot or {},
        "progress": selectors.job_progress(job=job),
        "errors_list": list(selectors.job_recent_errors(job=job)),
        "recent": list(selectors.job_recent_completions(job=job)),
        "can_manage": role_at_least(membership.role, Role.ADMIN),
        "is_stale": run_is_stale(job),
    }


@login_required
@require_GET
def job_detail(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    job, membership = _job(request, job_id)
    return render(request, "generation/job_detail.html", _job_ctx(job, membership))


@login_required
@require_GET
def job_progress(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    """The polled partial: reads the job row; 286 (stop polling) once the job has ended."""
    job, membership = _job(request, job_id)
    return polled_partial(
        request,
        "generation/job_detail.html#progress",
        _job_ctx(job, membership),
        active=job.is_active,
    )


def _job_action(request: HtmxHttpRequest, job_id: int, action: str) -> HttpResponse:
    job, membership = _job(request, job_id, Role.ADMIN)
    try:
        if action == "cancel":
            job = services.generation_job_cancel(job=job)
            messages.success(
                request,
                "Cancelling: the worker stops within seconds and keeps what it generated."
                if job.status == JobStatus.CANCELLING
                else "Job cancelled.",
            )
        elif action == "resume":
            job = services.generation_job_resume(job=job)
            messages.success(request, "Resumed: only the items without a completion will be sent.")
        else:
            job = services.generation_job_retry_failed(job=job)
            messages.success(
                request, "Retrying the failed items; completions that succeeded are kept."
            )
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    if request.htmx:
        job.refresh_from_db()
        return render(request, "generation/job_detail.html#progress", _job_ctx(job, membership))
    return redirect("generation_job_detail", job_id=job.pk)


@login_required
@require_POST
def job_cancel(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    return _job_action(request, job_id, "cancel")


@login_required
@require_POST
def job_resume(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    return _job_action(request, job_id, "resume")


@login_required
@require_POST
def job_retry_failed(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    return _job_action(request, job_id, "retry")
