"""Pages of datasets: the list and create form, a dataset with its versions and the build form
(live preview of counts), a version with lineage, diff and downloads, and the polled progress."""

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
from distillapp.datasets import downloads, selectors, services
from distillapp.datasets.models import Dataset, DatasetVersion
from distillapp.datasets.recipe import DEDUPE, PER_PROMPT, REASONING, Recipe
from distillapp.projects.access import get_project_for_user, get_scoped_object


def _dataset(
    request: HtmxHttpRequest, dataset_id: int, role: str = Role.VIEWER
) -> tuple[Dataset, Any]:
    return get_scoped_object(
        request.user, Dataset.objects.select_related("created_by"), dataset_id, role
    )


def _version(
    request: HtmxHttpRequest, version_id: int, role: str = Role.VIEWER
) -> tuple[DatasetVersion, Any]:
    return get_scoped_object(
        request.user,
        DatasetVersion.objects.select_related("dataset", "created_by", "parent"),
        version_id,
        role,
    )


def recipe_from_form(data: QueryDict) -> dict[str, Any]:
    """A form's fields as a recipe dict (unchecked boxes are absent from forms)."""
    recipe: dict[str, Any] = {"jobs": data.getlist("jobs")}
    for name in (
        "min_judge_score",
        "per_prompt",
        "reasoning",
        "dedupe",
        "validation_fraction",
        "seed",
    ):
        if data.get(name) not in (None, ""):
            recipe[name] = data.get(name)
    recipe["include_unreviewed"] = data.get("include_unreviewed") == "on"
    return recipe


@login_required
@require_http_methods(["GET", "POST"])
def dataset_list(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    role = Role.ADMIN if request.method == "POST" else Role.VIEWER
    project, membership = get_project_for_user(request.user, project_id, role)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            dataset = services.dataset_create(
                project=project,
                name=request.POST.get("name", ""),
                description=request.POST.get("description", ""),
                user=request.user,
            )
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            messages.success(request, f"Dataset “{dataset.name}” created.")
            return redirect("dataset_detail", dataset.pk)
    ctx = {
        "project": project,
        "membership": membership,
        "datasets": list(selectors.datasets_for_project(project=project)),
        "can_manage": role_at_least(membership.role, Role.ADMIN),
        "errors": errors,
    }
    return render(request, "datasets/list.html", ctx, status=422 if errors else 200)


def _detail_ctx(
    dataset: Dataset, membership: Any, recipe: dict[str, Any] | None = None
) -> dict[str, Any]:
    project = dataset.project
    return {
        "project": project,
        "dataset": dataset,
        "versions": list(selectors.dataset_versions(dataset=dataset)),
        "jobs": selectors.jobs_for_recipe_form(project=project),
        "can_manage": role_at_least(membership.role, Role.ADMIN),
        "recipe": recipe or Recipe().as_dict(),
        "choices": {"per_prompt": PER_PROMPT, "reasoning": REASONING, "dedupe": DEDUPE},
    }


@login_required
@require_GET
def dataset_detail(request: HtmxHttpRequest, dataset_id: int) -> HttpResponse:
    dataset, membership = _dataset(request, dataset_id)
    return render(request, "datasets/detail.html", _detail_ctx(dataset, membership))


@login_required
@require_GET
def dataset_preview(request: HtmxHttpRequest, dataset_id: int) -> HttpResponse:
    """The build form's live preview: what a build with the form's recipe would write now."""
    dataset, _membership = _dataset(request, dataset_id)
    ctx: dict[str, Any] = {"dataset": dataset}
    try:
        recipe = services.dataset_recipe_validate(
            project=dataset.project, data=recipe_from_form(request.GET)
        )
    except ValidationError as exc:
        ctx["errors"] = form_errors(exc)
    else:
        ctx["preview"] = selectors.recipe_preview(project=dataset.project, recipe=recipe)
    return render(request, "datasets/detail.html#preview", ctx)


@login_required
@require_POST
def dataset_build(request: HtmxHttpRequest, dataset_id: int) -> HttpResponse:
    dataset, membership = _dataset(request, dataset_id, Role.ADMIN)
    recipe = recipe_from_form(request.POST)
    try:
        version = services.dataset_version_build(dataset=dataset, recipe=recipe, user=request.user)
    except ValidationError as exc:
        ctx = _detail_ctx(dataset, membership)
        ctx["errors"] = form_errors(exc)
        return render(request, "datasets/detail.html", ctx, status=422)
    messages.success(request, f"Building version {version.number}.")
    return redirect("dataset_version_detail", version.pk)


def _version_ctx(version: DatasetVersion, membership: Any) -> dict[str, Any]:
    lineage = version.lineage or {}
    return {
        "project": version.project,
        "dataset": version.dataset,
        "version": version,
        "lineage": lineage,
        "diff": version.diff or {},
        "counts": version.counts or {},
        "can_manage": role_at_least(membership.role, Role.ADMIN),
        "has_hf": "hf.zip" in (version.files or {}),
    }


@login_required
@require_GET
def dataset_version_detail(request: HtmxHttpRequest, version_id: int) -> HttpResponse:
    version, membership = _version(request, version_id)
    return render(request, "datasets/version.html", _version_ctx(version, membership))


@login_required
@require_GET
def dataset_version_progress(request: HtmxHttpRequest, version_id: int) -> HttpResponse:
    """The polled partial: reads the version row; 286 (stop polling) once the build has ended."""
    version, membership = _version(request, version_id)
    return polled_partial(
        request,
        "datasets/version.html#progress",
        _version_ctx(version, membership),
        active=version.is_active,
    )


@login_required
@require_GET
def dataset_version_download(request: HtmxHttpRequest, version_id: int) -> HttpResponseBase:
    version, _membership = _version(request, version_id)
    fmt = request.GET.get("format", "jsonl")
    split = request.GET.get("split") or None
    if fmt not in downloads.FORMATS or split not in (None, "train", "validation"):
        return HttpResponse("Unknown format or split.", status=400, content_type="text/plain")
    try:
        return downloads.version_download(version=version, fmt=fmt, split=split)
    except downloads.NotDownloadable as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain")


@login_required
@require_POST
def dataset_version_cancel(request: HtmxHttpRequest, version_id: int) -> HttpResponse:
    version, _membership = _version(request, version_id, Role.ADMIN)
    try:
        services.dataset_version_cancel(version=version)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("dataset_version_detail", version.pk)


@login_required
@require_POST
def dataset_version_delete(request: HtmxHttpRequest, version_id: int) -> HttpResponse:
    version, _membership = _version(request, version_id, Role.ADMIN)
    try:
        services.dataset_version_delete(version=version)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("dataset_version_detail", version.pk)
    messages.success(request, f"Version {version.number} deleted.")
    return redirect("dataset_detail", version.dataset_id)


@login_required
@require_POST
def dataset_version_resume(request: HtmxHttpRequest, version_id: int) -> HttpResponse:
    """Build a failed or cancelled version again (admins and owners)."""
    version, _membership = _version(request, version_id, Role.ADMIN)
    try:
        services.dataset_version_resume(version=version)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Building version {version.number} again.")
    return redirect("dataset_version_detail", version.pk)


@login_required
@require_POST
def dataset_license(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    """The licence the project's dataset cards state (admins and owners)."""
    project, _membership = get_project_for_user(request.user, project_id, Role.ADMIN)
    try:
        services.project_license_set(
            project=project, license=request.POST.get("license", ""), user=request.user
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Licence saved; it applies to versions built from now on.")
    return redirect("dataset_list", project.pk)
