from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from distillapp.accounts.models import Role, role_at_least
from distillapp.core.http import HtmxHttpRequest, form_errors, parse_float, parse_int
from distillapp.generation.models import Completion, GenerationJob
from distillapp.projects.access import get_project_for_user
from distillapp.projects.models import Project
from distillapp.review import selectors, services
from distillapp.review.conf import review_settings
from distillapp.review.models import BulkAction


def _completion_in(project: Project, completion_id: int) -> Completion:
    completion = (
        Completion.objects.select_related("job", "job__project", "prompt")
        .filter(pk=completion_id, job__project=project)
        .first()
    )
    if completion is None:
        raise Http404("Not found.")
    return completion


def _stage_context(project: Project, user: Any, current: Completion | None) -> dict[str, Any]:
    cfg = review_settings(project)
    return {
        "project": project,
        "cfg": cfg,
        "item": selectors.completion_for_review(completion=current, reviewer=user)
        if current
        else None,
        "progress": selectors.review_progress(project=project, reviewer=user),
        "can_undo": selectors.review_can_undo(project=project, reviewer=user),
    }


def _next_for(project: Project, user: Any, prefer_id: int | None) -> Completion | None:
    """The prefetched item when the reviewer still holds its lease, else the next claim."""
    return services.review_claim_next(project=project, reviewer=user, prefer_id=prefer_id)


def _fail(request: HtmxHttpRequest, exc: ValidationError, project_id: int) -> HttpResponse:
    message = " ".join(msg for msgs in form_errors(exc).values() for msg in msgs)
    if request.htmx:
        return HttpResponse(message, status=422, content_type="text/plain; charset=utf-8")
    messages.error(request, message)
    return redirect("review_queue", project_id=project_id)


@login_required
@require_GET
def review_queue(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, membership = get_project_for_user(request.user, project_id)
    can_review = role_at_least(membership.role, Role.REVIEWER)
    current = None
    if can_review:
        services.review_queue_sync(project=project)
        current = services.review_claim_next(project=project, reviewer=request.user)
    ctx = _stage_context(project, request.user, current)
    ctx.update(
        {
            "membership": membership,
            "can_review": can_review,
            "is_admin": role_at_least(membership.role, Role.ADMIN),
        }
    )
    return render(request, "review/queue.html", ctx)


@login_required
@require_POST
def review_prefetch(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    """Lease the item after the one on screen, so a decision shows it without waiting for a claim."""
    project, _m = get_project_for_user(request.user, project_id, Role.REVIEWER)
    exclude = parse_int(request.POST.get("exclude"))
    upcoming = services.review_claim_next(
        project=project, reviewer=request.user, exclude_ids=[exclude] if exclude else []
    )
    return render(
        request, "review/queue.html#prefetch", {"next_id": upcoming.pk if upcoming else ""}
    )


@login_required
@require_POST
def review_decide(request: HtmxHttpRequest, project_id: int, completion_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.REVIEWER)
    completion = _completion_in(project, completion_id)
    try:
        services.review_decide(
            completion=completion,
            reviewer=request.user,
            decision=request.POST.get("decision", ""),
            reason=request.POST.get("reason"),
            edited_text=request.POST.get("edited_text"),
            duration_ms=parse_int(request.POST.get("duration_ms")),
        )
    except ValidationError as exc:
        return _fail(request, exc, project.pk)
    if not request.htmx:
        return redirect("review_queue", project_id=project.pk)
    current = _next_for(project, request.user, parse_int(request.POST.get("next_id")))
    return render(
        request, "review/queue.html#stage-response", _stage_context(project, request.user, current)
    )


@login_required
@require_POST
def review_undo(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.REVIEWER)
    try:
        current = services.review_undo(project=project, reviewer=request.user)
    except ValidationError as exc:
        return _fail(request, exc, project.pk)
    if current is None:
        messages.info(
            request, "Undone. Another reviewer holds that item now, so here is the next one."
        )
        current = services.review_claim_next(project=project, reviewer=request.user)
    if not request.htmx:
        return redirect("review_queue", project_id=project.pk)
    return render(
        request, "review/queue.html#stage-response", _stage_context(project, request.user, current)
    )


@login_required
@require_POST
def review_pick_best(request: HtmxHttpRequest, project_id: int, completion_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.REVIEWER)
    completion = _completion_in(project, completion_id)
    if request.POST.get("unpick"):
        services.review_unpick_best(completion=completion)
    else:
        services.review_pick_best(completion=completion, user=request.user)
    current_id = parse_int(request.POST.get("current")) or completion.pk
    current = _completion_in(project, current_id)
    if not request.htmx:
        return redirect("review_queue", project_id=project.pk)
    ctx = _stage_context(project, request.user, current)
    return render(request, "review/queue.html#samples", ctx)


@login_required
@require_GET
def review_judge_agreement(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    """The judge–human agreement figure, a fragment the filters page loads (filters never import
    review, so the figure comes from here)."""
    project, _membership = get_project_for_user(request.user, project_id)
    return render(
        request,
        "review/judge_agreement.html",
        {"project": project, "agreement": selectors.judge_agreement(project=project)},
    )


@login_required
@require_GET
def review_decisions(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, membership = get_project_for_user(request.user, project_id, Role.REVIEWER)
    is_admin = role_at_least(membership.role, Role.ADMIN)
    reviewer_name = request.GET.get("reviewer", "") if is_admin else ""
    return render(
        request,
        "review/decisions.html",
        {
            "project": project,
            "is_admin": is_admin,
            "reviewer_name": reviewer_name,
            "reviews": selectors.review_history(
                project=project, user=request.user, is_admin=is_admin, reviewer_name=reviewer_name
            ),
            "reviewers": selectors.project_reviewers(project=project) if is_admin else [],
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def review_settings_page(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    cfg = review_settings(project)
    errors: dict[str, list[str]] = {}
    form = {
        "reasons": "\n".join(cfg.reasons),
        "overlap": cfg.overlap,
        "lease_seconds": cfg.lease_seconds,
        "order": cfg.order,
    }
    if request.method == "POST":
        form = {
            "reasons": request.POST.get("reasons", ""),
            "overlap": request.POST.get("overlap", ""),
            "lease_seconds": request.POST.get("lease_seconds", ""),
            "order": request.POST.get("order", ""),
        }
        try:
            services.review_settings_update(
                project=project,
                reasons=str(form["reasons"]).splitlines(),
                overlap=parse_int(form["overlap"]) or 0,
                lease_seconds=parse_int(form["lease_seconds"]) or 0,
                order=str(form["order"]),
            )
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            messages.success(request, "Review settings saved.")
            return redirect("review_settings", project_id=project.pk)
    return render(
        request,
        "review/settings.html",
        {"project": project, "form": form, "errors": errors},
        status=422 if errors else 200,
    )


@login_required
@require_POST
def review_refresh(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    added = services.review_queue_sync(project=project, force=True)
    messages.success(
        request,
        f"Queue refreshed: {added} new item{'s' if added != 1 else ''}, priorities recomputed.",
    )
    return redirect("review_settings", project_id=project.pk)


def _bulk_filter(data: Any) -> dict[str, Any]:
    return {
        "min_judge": parse_float(data.get("min_judge"))
        if data.get("min_judge") not in (None, "")
        else None,
        "no_flags": data.get("no_flags") in ("1", "on", "true"),
        "job_id": parse_int(data.get("job")) if data.get("job") else None,
    }


@login_required
@require_http_methods(["GET", "POST"])
def review_bulk(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    """GET previews the count for a filter; POST (with the confirmed count) applies it."""
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    cfg = review_settings(project)
    data = request.POST if request.method == "POST" else request.GET
    flt = _bulk_filter(data)
    decision = data.get("decision", "approve")
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            action = services.review_bulk_apply(
                project=project,
                actor=request.user,
                decision=decision,
                reason=data.get("reason", ""),
                expected_count=parse_int(data.get("expected_count")),
                **flt,
            )
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            messages.success(
                request,
                f"{action.get_decision_display()} {action.count} items. You can undo this below.",
            )
            return redirect("review_bulk", project_id=project.pk)
    previewing = any(k in data for k in ("min_judge", "no_flags", "job", "decision"))
    count = services.bulk_candidates(project=project, **flt).count() if previewing else None
    return render(
        request,
        "review/bulk.html",
        {
            "project": project,
            "cfg": cfg,
            "flt": flt,
            "decision": decision,
            "reason": data.get("reason", ""),
            "count": count,
            "errors": errors,
            "jobs": GenerationJob.objects.filter(project=project).order_by("-created_at")[:50],
            "actions": selectors.bulk_actions_recent(project=project),
        },
        status=422 if errors else 200,
    )


@login_required
@require_POST
def review_bulk_undo(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    action = BulkAction.objects.filter(
        project=project, pk=parse_int(request.POST.get("bulk_action_id")) or 0
    ).first()
    if action is None:
        raise Http404("Not found.")
    restored = services.review_bulk_undo(bulk_action=action)
    messages.success(request, f"Undid the bulk action: {restored} items are back in the queue.")
    return redirect("review_bulk", project_id=project.pk)


@login_required
@require_GET
def review_adjudication(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    items = list(selectors.adjudication_items(project=project)[:50])
    rows = [
        {"item": i, "reviews": selectors.reviews_for_item(completion_id=i.completion_id)}
        for i in items
    ]
    return render(request, "review/adjudication.html", {"project": project, "rows": rows})


@login_required
@require_POST
def review_adjudicate(
    request: HtmxHttpRequest, project_id: int, completion_id: int
) -> HttpResponse:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    completion = _completion_in(project, completion_id)
    try:
        services.review_adjudicate(
            completion=completion,
            admin=request.user,
            decision=request.POST.get("decision", ""),
            edited_text=request.POST.get("edited_text"),
        )
    except ValidationError as exc:
        messages.error(request, " ".join(m for ms in form_errors(exc).values() for m in ms))
    else:
        messages.success(request, f"Settled completion #{completion.pk}.")
    return redirect("review_adjudication", project_id=project.pk)
