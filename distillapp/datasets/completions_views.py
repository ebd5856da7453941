"""Pages of the completions browser: the filtered, keyset-paged list and one completion."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from distillapp.core.cursor import InvalidCursor
from distillapp.core.http import HtmxHttpRequest, form_errors
from distillapp.datasets import completions_selectors as selectors
from distillapp.generation.access import get_completion_for_user
from distillapp.projects.access import get_project_for_user


@login_required
@require_GET
def completion_list(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _membership = get_project_for_user(request.user, project_id)
    cursor = request.GET.get("cursor", "")
    status = 200
    error = ""
    errors: dict[str, list[str]] = {}
    filters = selectors.CompletionFilters()
    page = selectors.CompletionPage()
    try:
        filters = selectors.completion_filters_parse(request.GET)
        page = selectors.completions_page(
            project=project,
            filters=filters,
            cursor=cursor or None,
            limit=selectors.clamp_limit(request.GET.get("limit")),
        )
    except ValidationError as exc:
        errors, status = form_errors(exc), 422
    except InvalidCursor:
        error, status = (
            "This link to a further page is invalid; start again from the first page.",
            400,
        )
    ctx: dict[str, Any] = {
        "project": project,
        "page": page,
        "filters": filters,
        "raw": request.GET,
        "errors": errors,
        "error": error,
        "choices": selectors.completion_filter_choices(project=project),
        "more_query": filters.as_query(),
    }
    if request.htmx:
        partial = "completion-rows" if cursor else "completion-list"
        return render(request, f"datasets/completions.html#{partial}", ctx, status=status)
    return render(request, "datasets/completions.html", ctx, status=status)


@login_required
@require_GET
def completion_detail(request: HtmxHttpRequest, completion_id: int) -> HttpResponse:
    completion, _membership = get_completion_for_user(request.user, completion_id)
    ctx = {
        "project": completion.job.project,
        "c": selectors.completion_detail(completion=completion),
    }
    return render(request, "datasets/completion.html", ctx)
