from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from distillapp.accounts.models import Role, role_at_least
from distillapp.core.cursor import InvalidCursor
from distillapp.core.http import HtmxHttpRequest
from distillapp.projects.access import get_project_for_user, get_scoped_object
from distillapp.prompts import selectors, services
from distillapp.prompts.models import PromptSet, Split

ACCEPT = ".jsonl,.ndjson,.csv,.parquet,.pq"


def _is_async(request: HtmxHttpRequest) -> bool:
    return bool(request.htmx) or request.headers.get("X-Requested-With") == "XMLHttpRequest"


def _upload_context(project: Any, **extra: Any) -> dict[str, Any]:
    return {
        "project": project,
        "accept": ACCEPT,
        "max_bytes": settings.PROMPT_UPLOAD_MAX_BYTES,
        "form": {"name": "", "heldout_fraction": "0.1", "seed": ""},
        "errors": [],
        **extra,
    }


def _render_upload(
    request: HtmxHttpRequest, ctx: dict[str, Any], status: int = 200
) -> HttpResponse:
    template = "prompts/upload.html#upload-form" if _is_async(request) else "prompts/upload.html"
    return render(request, template, ctx, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def prompt_set_upload(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _membership = get_project_for_user(request.user, project_id, Role.ADMIN)
    if request.method == "GET":
        return _render_upload(request, _upload_context(project))
    limit = settings.PROMPT_UPLOAD_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + 1024 * 1024:  # refuse before the body is spooled to disk
        detail = f"The file is larger than the limit of {limit:,} bytes."
        return _render_upload(
            request,
            _upload_context(project, detail=detail, errors=[{"line": None, "message": detail}]),
            status=413,
        )
    form = {
        "name": request.POST.get("name", ""),
        "heldout_fraction": request.POST.get("heldout_fraction", "0.1"),
        "seed": request.POST.get("seed", ""),
    }
    upload = request.FILES.get("file")
    if upload is None:
        detail = "Choose a file to upload."
        return _render_upload(
            request,
            _upload_context(
                project, form=form, detail=detail, errors=[{"line": None, "message": detail}]
            ),
            status=400,
        )
    try:
        result = services.prompt_set_import(
            project=project,
            file=upload,
            name=form["name"],
            heldout_fraction=services.clean_fraction(form["heldout_fraction"] or "0.1"),
            seed=services.clean_seed(form["seed"]) if form["seed"].strip() else None,
            created_by=request.user,
        )
    except services.PromptImportError as exc:
        ctx = _upload_context(
            project, form=form, detail=exc.detail, errors=exc.errors, filename=upload.name
        )
        return _render_upload(request, ctx, status=exc.status)
    messages.success(
        request,
        f"Imported {result.imported:,} prompts ({result.heldout:,} held out for evaluation; "
        f"{result.duplicates_dropped:,} duplicates dropped).",
    )
    return redirect("prompt_set_detail", prompt_set_id=result.prompt_set.pk)


@login_required
@require_GET
def prompt_set_detail(request: HtmxHttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set, membership = get_scoped_object(
        request.user, PromptSet.objects.select_related("created_by"), prompt_set_id
    )
    filters = {
        "q": request.GET.get("q", "").strip(),
        "split": request.GET.get("split", "")
        if request.GET.get("split", "") in Split.values
        else "",
        "meta_key": request.GET.get("meta_key", "").strip(),
        "meta_value": request.GET.get("meta_value", "").strip(),
    }
    cursor = request.GET.get("cursor", "")
    status = 200
    error = ""
    try:
        page = selectors.prompt_set_prompts(
            prompt_set=prompt_set,
            cursor=cursor or None,
            q=filters["q"],
            split=filters["split"] or None,
            meta_key=filters["meta_key"] or None,
            meta_value=filters["meta_value"] or None,
        )
    except InvalidCursor:
        page = selectors.PromptPage(items=[], next_cursor=None)
        error, status = (
            "This link to a further page is invalid; start again from the first page.",
            400,
        )
    filtered = any(filters.values())
    ctx = {
        "prompt_set": prompt_set,
        "project": prompt_set.project,
        "page": page,
        "filters": filters,
        "filtered": filtered,
        "error": error,
        "can_manage": role_at_least(membership.role, Role.ADMIN),
        "more_query": {k: v for k, v in filters.items() if v},
    }
    if request.htmx:
        partial = "prompt-rows" if cursor else "prompt-list"
        return render(request, f"prompts/detail.html#{partial}", ctx, status=status)
    return render(request, "prompts/detail.html", ctx, status=status)


@login_required
@require_GET
def prompt_set_search_index(request: HtmxHttpRequest, prompt_set_id: int) -> HttpResponse:
    """The set's search-index progress (polled by the set page while the indexing task runs)."""
    prompt_set, _ = get_scoped_object(request.user, PromptSet.objects.all(), prompt_set_id)
    return render(request, "prompts/detail.html#search-index", {"prompt_set": prompt_set})


@login_required
@require_http_methods(["GET", "POST"])
def prompt_set_delete(request: HtmxHttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set, _membership = get_scoped_object(
        request.user, PromptSet.objects.all(), prompt_set_id, Role.ADMIN
    )
    if request.method == "POST":
        name, project_id = prompt_set.name, prompt_set.project_id
        try:
            services.prompt_set_delete(prompt_set=prompt_set)
        except services.PromptSetInUse as exc:
            messages.error(request, str(exc))
            return render(
                request,
                "prompts/delete.html",
                {"prompt_set": prompt_set, "project": prompt_set.project},
                status=409,
            )
        messages.success(request, f"Deleted prompt set {name}.")
        return redirect("project_detail", project_id=project_id)
    return render(
        request, "prompts/delete.html", {"prompt_set": prompt_set, "project": prompt_set.project}
    )
