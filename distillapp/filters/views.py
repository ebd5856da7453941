from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from distillapp.accounts.models import Role, role_at_least
from distillapp.core.cursor import InvalidCursor, decode_cursor, encode_cursor
from distillapp.core.http import HtmxHttpRequest, form_errors, parse_int
from distillapp.filters import config as C
from distillapp.filters import services
from distillapp.filters.models import CompletionVerdict, FilterRun, VerdictState
from distillapp.filters.selectors import (
    filter_config_for_project,
    filter_run_latest,
    filter_summary,
    verdicts_for_project,
)
from distillapp.generation.access import get_completion_for_user
from distillapp.projects.access import get_project_for_user

PAGE_SIZE = 50
LIST_STATES = {
    "filtered": [VerdictState.FILTERED],
    "restored": [VerdictState.RESTORED],
    "flagged": [VerdictState.FILTERED, VerdictState.RESTORED],
    # Completions the judge could not score, in any state (they are not filtered out for it).
    "judge_error": [],
}


def _jobs(project: Any) -> list[Any]:
    from distillapp.generation.models import GenerationJob

    return list(GenerationJob.objects.filter(project=project).order_by("-created_at")[:50])


@login_required
@require_GET
def filtered_list(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, membership = get_project_for_user(request.user, project_id)
    state = request.GET.get("state", "filtered")
    if state not in LIST_STATES:
        state = "filtered"
    flag = request.GET.get("flag") or None
    if flag not in C.FILTER_NAMES:
        flag = None
    job_id = parse_int(request.GET.get("job"))
    try:
        after_id = decode_cursor(request.GET.get("cursor"))
    except InvalidCursor:
        after_id = None
    verdicts = verdicts_for_project(
        project=project,
        states=LIST_STATES[state],
        flag=flag,
        job_id=job_id,
        after_id=after_id,
        limit=PAGE_SIZE,
        judge_error=state == "judge_error",
    )
    next_cursor = encode_cursor(verdicts[-1].pk) if len(verdicts) == PAGE_SIZE else None
    ctx = {
        "project": project,
        "membership": membership,
        "verdicts": verdicts,
        "state": state,
        "flag": flag,
        "job_id": job_id,
        "next_cursor": next_cursor,
        "filter_labels": C.FILTER_LABELS,
        "filter_names": C.FILTER_NAMES,
        "summary": filter_summary(project=project),
        "run": filter_run_latest(project=project),
        "jobs": _jobs(project),
        "can_manage": role_at_least(membership.role, Role.ADMIN),
        "can_review": role_at_least(membership.role, Role.REVIEWER),
    }
    if request.htmx and request.GET.get("cursor"):
        return render(request, "filters/list.html#page", ctx)
    return render(request, "filters/list.html", ctx)


def _config_form_data(post: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"enabled": post.getlist("enabled")}
    for name in (
        "min_chars",
        "max_chars",
        "repetition_n",
        "repetition_threshold",
        "echo_threshold",
        "reference_mode",
        "dedup_threshold",
        "judge_teacher_id",
        "judge_rubric",
        "judge_threshold",
    ):
        data[name] = post.get(name, "")
    data["refusal_phrases"] = post.get("refusal_phrases", "").splitlines()
    data["dedup_within_prompt"] = post.get("dedup_within_prompt") == "on"
    return data


@login_required
@require_http_methods(["GET", "POST"])
def filter_config(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    from distillapp.generation.models import Teacher

    project, membership = get_project_for_user(request.user, project_id)
    can_manage = role_at_least(membership.role, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = filter_config_for_project(project=project).as_dict()
    if request.method == "POST":
        project, membership = get_project_for_user(request.user, project_id, Role.ADMIN)
        data = _config_form_data(request.POST)
        try:
            services.filter_config_update(project=project, data=data)
        except ValidationError as exc:
            errors = form_errors(exc)
            values = {**values, **data}
        else:
            messages.success(request, "Filter settings saved. They apply to the next run.")
            return redirect("filters_config", project_id=project.pk)
    ctx = {
        "project": project,
        "membership": membership,
        "can_manage": can_manage,
        "errors": errors,
        "general_errors": errors.get("__all__", []),
        "values": values,
        "refusal_text": "\n".join(values.get("refusal_phrases") or []),
        "filter_names": C.FILTER_NAMES,
        "filter_labels": C.FILTER_LABELS,
        "reference_modes": C.REFERENCE_MODES,
        "teachers": list(Teacher.objects.filter(project=project).order_by("name")),
    }
    return render(request, "filters/config.html", ctx, status=422 if errors else 200)


@login_required
@require_POST
def filter_run(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    from distillapp.generation.models import GenerationJob

    project, _membership = get_project_for_user(request.user, project_id, Role.ADMIN)
    job = None
    job_id = parse_int(request.POST.get("job_id"))
    if job_id is not None:
        job = GenerationJob.objects.filter(pk=job_id, project=project).first()
        if job is None:
            raise Http404("Not found.")
    error = ""
    run: FilterRun | None
    try:
        run = services.filter_run_start(project=project, user=request.user, job=job)
    except ValidationError as exc:
        error = " ".join(exc.messages)
        run = filter_run_latest(project=project)
    if request.htmx:
        return render(
            request, "filters/list.html#progress", {"project": project, "run": run, "error": error}
        )
    if error:
        messages.error(request, error)
    elif run is not None:
        messages.success(request, f"Filter run queued for the {run.scope_label}.")
    return redirect("filters_list", project_id=project.pk)


@login_required
@require_GET
def filter_progress(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _membership = get_project_for_user(request.user, project_id)
    run = filter_run_latest(project=project)
    ctx = {"project": project, "run": run}
    if run is None or not run.is_active:
        response = render(request, "filters/list.html#progress", ctx)
        if request.htmx:
            stop = HttpResponseStopPolling(response.content)
            return stop
        return response
    return render(request, "filters/list.html#progress", ctx)


def _verdict_action(request: HtmxHttpRequest, completion_id: int, *, restore: bool) -> HttpResponse:
    completion, membership = get_completion_for_user(request.user, completion_id, Role.REVIEWER)
    project = completion.job.project
    try:
        if restore:
            verdict = services.verdict_restore(completion=completion, user=request.user)
        else:
            verdict = services.verdict_unrestore(completion=completion, user=request.user)
    except ValidationError as exc:
        if request.htmx:
            return HttpResponse(" ".join(exc.messages), status=422)
        messages.error(request, " ".join(exc.messages))
        return redirect("filters_list", project_id=project.pk)
    if request.htmx:
        verdict = CompletionVerdict.objects.select_related("completion__prompt", "restored_by").get(
            pk=verdict.pk
        )
        return render(
            request,
            "filters/list.html#verdict",
            {
                "v": verdict,
                "project": project,
                "can_review": True,
                "filter_labels": C.FILTER_LABELS,
            },
        )
    messages.success(
        request,
        f"Completion #{completion.pk} restored; it can be reviewed."
        if restore
        else f"Completion #{completion.pk} is filtered out again.",
    )
    next_url = request.POST.get("next", "")
    if next_url.startswith(reverse("filters_list", args=[project.pk])):
        return redirect(next_url)
    return redirect("filters_list", project_id=project.pk)


@login_required
@require_POST
def verdict_restore(request: HtmxHttpRequest, completion_id: int) -> HttpResponse:
    return _verdict_action(request, completion_id, restore=True)


@login_required
@require_POST
def verdict_unrestore(request: HtmxHttpRequest, completion_id: int) -> HttpResponse:
    return _verdict_action(request, completion_id, restore=False)
