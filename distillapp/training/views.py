"""Pages of training: base models and runs of a project, a base model's inspection, the launch
form (with a preview of steps and tokens), a run with its polled progress partial, downloads."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from distillapp.accounts.models import Role, role_at_least
from distillapp.core.http import HtmxHttpRequest, form_errors, polled_partial
from distillapp.projects.access import get_project_for_user, get_scoped_object
from distillapp.training import artifacts, selectors, services
from distillapp.training.models import BaseModel, Method, TrainingArtifact, TrainingRun
from distillapp.training.settings_schema import SETTINGS, clean_settings, defaults


def _base_model(
    request: HtmxHttpRequest, pk: int, role: str = Role.VIEWER
) -> tuple[BaseModel, Any]:
    return get_scoped_object(request.user, BaseModel.objects.all(), pk, role)


def _run(request: HtmxHttpRequest, pk: int, role: str = Role.VIEWER) -> tuple[TrainingRun, Any]:
    return get_scoped_object(
        request.user,
        TrainingRun.objects.select_related(
            "dataset_version", "dataset_version__dataset", "base_model", "created_by", "teacher"
        ),
        pk,
        role,
    )


def settings_from_form(data: QueryDict) -> dict[str, Any]:
    """The form's TrainConfig fields (unchecked boxes are absent from forms: they are False)."""
    values: dict[str, Any] = {}
    for s in SETTINGS:
        if s.kind is bool:
            values[s.name] = data.get(s.name) == "on"
        elif data.get(s.name) not in (None, ""):
            values[s.name] = data.get(s.name)
    return values


@login_required
@require_GET
def training_list(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, membership = get_project_for_user(request.user, project_id)
    ctx = {
        "project": project,
        "runs": list(selectors.training_runs_for_project(project=project)[:200]),
        "base_models": list(selectors.base_models_for_project(project=project)),
        "can_manage": role_at_least(membership.role, Role.ADMIN),
        "errors": {},
    }
    return render(request, "training/list.html", ctx)


@login_required
@require_POST
def base_model_add(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, membership = get_project_for_user(request.user, project_id, Role.ADMIN)
    source = request.POST.get("source", "path")
    location = request.POST.get("location", "")
    try:
        b = services.base_model_create(
            project=project,
            user=request.user,
            name=request.POST.get("name", ""),
            path=location if source == "path" else "",
            hub_id=location if source == "hub_id" else "",
        )
    except ValidationError as exc:
        ctx = {
            "project": project,
            "runs": list(selectors.training_runs_for_project(project=project)[:200]),
            "base_models": list(selectors.base_models_for_project(project=project)),
            "can_manage": True,
            "errors": form_errors(exc),
            "form": request.POST,
        }
        return render(request, "training/list.html", ctx, status=422)
    messages.success(request, f"Base model “{b.name}” added; a gpu worker inspects it.")
    return redirect("base_model_detail", b.pk)


def _base_model_ctx(b: BaseModel, membership: Any) -> dict[str, Any]:
    return {
        "project": b.project,
        "base_model": b,
        "inspection": b.inspection or {},
        "teachers": selectors.base_model_teachers(base_model=b),
        "can_manage": role_at_least(membership.role, Role.ADMIN),
    }


@login_required
@require_GET
def base_model_detail(request: HtmxHttpRequest, base_model_id: int) -> HttpResponse:
    b, membership = _base_model(request, base_model_id)
    ctx = _base_model_ctx(b, membership)
    if request.htmx:
        return polled_partial(
            request, "training/base_model.html#inspection", ctx, active=b.is_active
        )
    return render(request, "training/base_model.html", ctx)


@login_required
@require_POST
def base_model_reinspect(request: HtmxHttpRequest, base_model_id: int) -> HttpResponse:
    b, _m = _base_model(request, base_model_id, Role.ADMIN)
    services.base_model_inspect(base_model=b)
    return redirect("base_model_detail", b.pk)


@login_required
@require_POST
def base_model_delete(request: HtmxHttpRequest, base_model_id: int) -> HttpResponse:
    b, _m = _base_model(request, base_model_id, Role.ADMIN)
    try:
        services.base_model_delete(base_model=b, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("base_model_detail", b.pk)
    messages.success(request, f"Base model “{b.name}” deleted.")
    return redirect("training_list", b.project_id)


def _form_ctx(project: Any, values: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
    return {
        "project": project,
        **selectors.training_form_choices(project=project),
        "settings": [(s, values.get(s.name, defaults().get(s.name))) for s in SETTINGS],
        "values": values,
        "errors": errors,
    }


@login_required
@require_http_methods(["GET", "POST"])
def training_run_new(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    if request.method == "GET":
        return render(
            request, "training/new.html", _form_ctx(project, {**defaults(), "method": "sft"}, {})
        )
    values = settings_from_form(request.POST)
    choice: dict[str, Any] = {
        "dataset_version_id": request.POST.get("dataset_version_id"),
        "base_model_id": request.POST.get("base_model_id"),
        "method": request.POST.get("method", Method.SFT),
        "teacher_id": request.POST.get("teacher_id") or None,
    }
    try:
        run = services.training_run_launch(
            project=project, user=request.user, config=values, **choice
        )
    except ValidationError as exc:
        ctx = _form_ctx(project, {**values, **choice}, form_errors(exc))
        return render(request, "training/new.html", ctx, status=422)
    messages.success(request, f"Training run {run.pk} queued.")
    return redirect("training_run_detail", run.pk)


@login_required
@require_GET
def training_run_preview(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    """The launch form's preview: steps and tokens for the form's current values."""
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    ctx: dict[str, Any] = {"project": project}
    method = request.GET.get("method", Method.SFT)
    version = selectors.training_form_choices(project=project)["versions"]
    chosen = next((v for v in version if str(v.pk) == request.GET.get("dataset_version_id")), None)
    base = BaseModel.objects.filter(
        project=project, pk__in=[request.GET.get("base_model_id") or 0]
    ).first()
    try:
        config = clean_settings(method=method, values=settings_from_form(request.GET))
    except ValidationError as exc:
        ctx["errors"] = form_errors(exc)
    else:
        if chosen is not None:
            ctx["preview"] = selectors.training_preview(
                version=chosen, base_model=base, method=method, config=config
            )
    return render(request, "training/new.html#preview", ctx)


def _run_ctx(run: TrainingRun, membership: Any) -> dict[str, Any]:
    return {
        "project": run.project,
        "run": run,
        "summary": selectors.training_run_summary(run=run),
        "metric_rows": selectors.training_metrics(run=run)[-50:],
        "artifacts": selectors.training_artifacts(run=run),
        "quantizations": selectors.training_quantizations(run=run),
        "can_manage": role_at_least(membership.role, Role.ADMIN),
    }


@login_required
@require_GET
def training_run_detail(request: HtmxHttpRequest, training_run_id: int) -> HttpResponse:
    run, membership = _run(request, training_run_id)
    return render(request, "training/run.html", _run_ctx(run, membership))


@login_required
@require_GET
def training_run_progress(request: HtmxHttpRequest, training_run_id: int) -> HttpResponse:
    """The polled partial; 286 (stop polling) once the run has ended."""
    run, membership = _run(request, training_run_id)
    return polled_partial(
        request, "training/run.html#progress", _run_ctx(run, membership), active=run.is_active
    )


def _action(request: HtmxHttpRequest, training_run_id: int, fn: Any) -> HttpResponse:
    run, _m = _run(request, training_run_id, Role.ADMIN)
    try:
        fn(run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("training_run_detail", run.pk)


@login_required
@require_POST
def training_run_cancel(request: HtmxHttpRequest, training_run_id: int) -> HttpResponse:
    return _action(request, training_run_id, lambda run: services.training_run_cancel(run=run))


@login_required
@require_POST
def training_run_resume(request: HtmxHttpRequest, training_run_id: int) -> HttpResponse:
    return _action(request, training_run_id, lambda run: services.training_run_resume(run=run))


@login_required
@require_POST
def training_run_quantize(request: HtmxHttpRequest, training_run_id: int) -> HttpResponse:
    scheme = request.POST.get("scheme", "int8")
    return _action(
        request,
        training_run_id,
        lambda run: services.training_run_quantize(run=run, user=request.user, scheme=scheme),
    )


@login_required
@require_GET
def training_artifact_download(
    request: HtmxHttpRequest, training_run_id: int, artifact_name: str
) -> HttpResponseBase:
    run, _m = _run(request, training_run_id)
    artifact = TrainingArtifact.objects.filter(run=run, name=artifact_name).first()
    if artifact is None:
        return HttpResponse("No such artefact (yet).", status=409, content_type="text/plain")
    try:
        return artifacts.artifact_download(artifact=artifact)
    except artifacts.NotDownloadable as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain")
