"""Pages of evaluation: the add/upload forms on the project page, an eval set with its items
(keyset pages), and the queue of held-out items whose reference no human approved yet."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from distillapp.accounts.models import Role, role_at_least
from distillapp.core.cursor import InvalidCursor
from distillapp.core.http import HtmxHttpRequest
from distillapp.evaluation import selectors, services
from distillapp.evaluation.models import EvalItem, EvalSet, EvalSetKind
from distillapp.projects.access import get_project_for_user, get_scoped_object


def _eval_set(
    request: HtmxHttpRequest, eval_set_id: int, role: str = Role.VIEWER
) -> tuple[EvalSet, Any]:
    return get_scoped_object(
        request.user, EvalSet.objects.select_related("created_by"), eval_set_id, role
    )


def _import_failed(request: HtmxHttpRequest, exc: services.EvalSetImportError) -> None:
    lines = "; ".join(
        f"line {e['line']}: {e['message']}" if e.get("line") else str(e["message"])
        for e in exc.errors[:5]
    )
    messages.error(request, f"Nothing was added. {exc.detail}" + (f" ({lines})" if lines else ""))


@login_required
@require_POST
def eval_set_add(request: HtmxHttpRequest, project_id: int) -> HttpResponseBase:
    """A held-out set or a shipped suite, chosen in the project page's form."""
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    kind = request.POST.get("kind", "")
    if kind not in (EvalSetKind.HELDOUT, EvalSetKind.CAPABILITY, EvalSetKind.SAFETY):
        messages.error(
            request, "Choose held-out prompts, the capability suite or the safety suite."
        )
        return redirect("project_detail", project.pk)
    try:
        eval_set = services.eval_set_create(
            project=project, kind=kind, name=request.POST.get("name", ""), user=request.user
        )
    except services.EvalSetImportError as exc:
        _import_failed(request, exc)
        return redirect("project_detail", project.pk)
    return redirect("eval_set_detail", eval_set.pk)


@login_required
@require_POST
def eval_set_upload(request: HtmxHttpRequest, project_id: int) -> HttpResponseBase:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    upload = request.FILES.get("file")
    if upload is None:
        messages.error(request, "Choose a file to upload.")
        return redirect("project_detail", project.pk)
    kind = request.POST.get("kind") or EvalSetKind.UPLOADED
    try:
        eval_set = services.eval_set_upload(
            project=project,
            file=upload,
            name=request.POST.get("name", ""),
            kind=kind,
            user=request.user,
        )
    except services.EvalSetImportError as exc:
        _import_failed(request, exc)
        return redirect("project_detail", project.pk)
    return redirect("eval_set_detail", eval_set.pk)


@login_required
@require_GET
def eval_set_detail(request: HtmxHttpRequest, eval_set_id: int) -> HttpResponse:
    eval_set, membership = _eval_set(request, eval_set_id)
    error = ""
    try:
        page = selectors.eval_set_items(eval_set=eval_set, cursor=request.GET.get("cursor"))
    except InvalidCursor as exc:
        page, error = selectors.ItemPage(items=[], next_cursor=None), str(exc)
    context = {
        "eval_set": eval_set,
        "project": eval_set.project,
        "page": page,
        "error": error,
        "can_manage": role_at_least(membership.role, Role.ADMIN),
        "can_review": role_at_least(membership.role, Role.REVIEWER),
    }
    template = "evaluation/eval_set.html"
    if request.htmx and request.GET.get("cursor"):
        template += "#item-rows"
    return render(request, template, context)


@login_required
@require_POST
def eval_set_delete(request: HtmxHttpRequest, eval_set_id: int) -> HttpResponseBase:
    eval_set, _m = _eval_set(request, eval_set_id, Role.ADMIN)
    project_id = eval_set.project_id
    services.eval_set_delete(eval_set=eval_set)
    messages.success(request, "Eval set deleted.")
    return redirect("project_detail", project_id)


@login_required
@require_GET
def reference_queue(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, membership = get_project_for_user(request.user, project_id)
    return render(
        request,
        "evaluation/reference_queue.html",
        {
            "project": project,
            "items": selectors.reference_queue(project=project),
            "remaining": selectors.reference_queue_count(project=project),
            "can_review": role_at_least(membership.role, Role.REVIEWER),
        },
    )


@login_required
@require_POST
def eval_item_review(request: HtmxHttpRequest, eval_item_id: int) -> HttpResponseBase:
    """Approve an item's reference, as written in the form (an edit) or as it stands."""
    item, _m = get_scoped_object(
        request.user, EvalItem.objects.select_related("eval_set"), eval_item_id, Role.REVIEWER
    )
    reference = request.POST.get("reference")
    try:
        services.eval_item_reference_approve(
            item=item,
            user=request.user,
            reference=reference if reference and reference.strip() else None,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Reference approved.")
    if request.POST.get("next") == "set":
        return redirect("eval_set_detail", item.eval_set_id)
    return redirect("eval_reference_queue", item.project_id)
