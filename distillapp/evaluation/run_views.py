"""Pages of eval runs: the launch form, the dashboard (progress polled while it runs), the
side-by-side viewer, cancel and resume. Files and JSON come from the API (report.html,
results.json, samples.jsonl), which also takes the session."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from distillapp.accounts.models import Role, role_at_least
from distillapp.core.cursor import InvalidCursor
from distillapp.core.http import HtmxHttpRequest, parse_int, polled_partial
from distillapp.core.runs.models import RunStatus
from distillapp.evaluation import human_verdicts, reports, run_services, selectors
from distillapp.evaluation.models import EvalRun, HumanPreference
from distillapp.generation.models import Teacher, TeacherKind
from distillapp.projects.access import get_project_for_user, get_scoped_object
from distillapp.training.models import BaseModel, TrainingArtifact, TrainingRun


def _run(
    request: HtmxHttpRequest, eval_run_id: int, role: str = Role.VIEWER
) -> tuple[EvalRun, Any]:
    return get_scoped_object(
        request.user, EvalRun.objects.select_related("project"), eval_run_id, role
    )


def _choices(project: Any) -> dict[str, Any]:
    runs = TrainingRun.objects.filter(project=project, status=RunStatus.SUCCEEDED).select_related(
        "base_model"
    )
    artifacts: dict[int, list[str]] = {}
    for run_id, name in TrainingArtifact.objects.filter(run__in=runs).values_list("run_id", "name"):
        if name in run_services.ARTIFACTS:
            artifacts.setdefault(run_id, []).append(name)
    return {
        "teachers": list(Teacher.objects.filter(project=project).order_by("name")),
        "judges": list(Teacher.objects.filter(project=project, kind=TeacherKind.OPENAI)),
        "base_models": [
            b for b in BaseModel.objects.filter(project=project).order_by("name") if b.is_ready
        ],
        "students": [
            {"run": r, "artifacts": sorted(artifacts.get(r.pk, []))}
            for r in runs
            if artifacts.get(r.pk)
        ],
        "eval_sets": list(selectors.eval_sets_for_project(project=project)),
    }


def _parse_model(value: str) -> run_services.ModelChoice:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ValidationError({"models": "Unknown model choice."})
    return run_services.ModelChoice(
        kind=parts[0], id=int(parts[1]), artifact=parts[2] if len(parts) == 3 else ""
    )


@login_required
@require_http_methods(["GET", "POST"])
def eval_run_new(request: HtmxHttpRequest, project_id: int) -> HttpResponseBase:
    project, _m = get_project_for_user(
        request.user, project_id, Role.ADMIN if request.method == "POST" else Role.VIEWER
    )
    if request.method == "POST":
        post = request.POST
        try:
            judge = post.get("judge", "")
            run = run_services.eval_run_create(
                project=project,
                models=[_parse_model(v) for v in post.getlist("model")],
                eval_set_ids=[int(v) for v in post.getlist("eval_set") if v.isdigit()],
                judge_teacher_id=int(judge) if judge.isdigit() else None,
                decoding={
                    "temperature": post.get("temperature", ""),
                    "max_tokens": post.get("max_tokens", ""),
                },
                criteria=post.get("criteria", ""),
                name=post.get("name", ""),
                user=request.user,
            )
        except (ValidationError, ValueError) as exc:
            text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            messages.error(request, f"The run was not started. {text}")
        else:
            return redirect("eval_run_detail", run.pk)
    context = {"project": project, **_choices(project)}
    return render(request, "evaluation/run_new.html", context)


@login_required
@require_GET
def eval_run_detail(request: HtmxHttpRequest, eval_run_id: int) -> HttpResponse:
    run, membership = _run(request, eval_run_id)
    context = {
        **reports.dashboard_context(run),
        "project": run.project,
        "can_manage": role_at_least(membership.role, Role.ADMIN),
    }
    if request.htmx and request.GET.get("partial") == "progress":
        return polled_partial(
            request, "evaluation/run.html#progress", context, active=not run.is_ended
        )
    return render(request, "evaluation/run.html", context)


@login_required
@require_GET
def eval_run_samples(request: HtmxHttpRequest, eval_run_id: int) -> HttpResponse:
    run, _m = _run(request, eval_run_id)
    get = request.GET
    filters = {
        "category": get.get("category", "")[:100],
        "contaminated": get.get("contaminated", "")
        if get.get("contaminated") in ("yes", "no")
        else "",
        "outcome": get.get("outcome", "") if get.get("outcome") in selectors.OUTCOMES else "",
        "model_key": get.get("model_key", "")[:100],
    }
    error = ""
    try:
        page = selectors.eval_run_samples(
            run=run, cursor=get.get("cursor") or None, limit=20, **filters
        )
    except InvalidCursor as exc:
        page, error = selectors.SamplePage(samples=[], next_cursor=None), str(exc)
    labels = {s["key"]: s["label"] for s in run.model_specs}
    can_review = bool(run.judge) and role_at_least(_m.role, Role.REVIEWER)
    mine = (
        human_verdicts.human_verdicts_for(
            run=run, user=request.user, item_ids=[s.item.pk for s in page.samples]
        )
        if can_review
        else {}
    )
    context = {
        "run": run,
        "project": run.project,
        "page": page,
        "error": error,
        "filters": filters,
        "specs": run.model_specs,
        "labels": labels,
        "candidates": [s for s in run.model_specs if s["key"] != run.baseline_key],
        "categories": selectors.eval_run_categories(run=run),
        "can_review": can_review,
        "mine": mine,
        "preferences": HumanPreference.choices,
    }
    template = "evaluation/samples.html"
    if request.htmx and get.get("cursor"):
        template += "#sample-rows"
    return render(request, template, context)


@login_required
@require_POST
def eval_run_cancel(request: HtmxHttpRequest, eval_run_id: int) -> HttpResponseBase:
    run, _m = _run(request, eval_run_id, Role.ADMIN)
    try:
        run_services.eval_run_cancel(run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("eval_run_detail", run.pk)


@login_required
@require_POST
def eval_run_resume(request: HtmxHttpRequest, eval_run_id: int) -> HttpResponseBase:
    run, _m = _run(request, eval_run_id, Role.ADMIN)
    try:
        run_services.eval_run_resume(run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("eval_run_detail", run.pk)


@login_required
@require_POST
def eval_human_verdict(request: HtmxHttpRequest, eval_run_id: int) -> HttpResponseBase:
    """A reviewer's verdict on one pair, from the side-by-side viewer (a plain form: the answers'
    container disables htmx). Back to where the reviewer was."""
    run, _m = _run(request, eval_run_id, Role.REVIEWER)
    try:
        verdict = human_verdicts.eval_human_verdict_set(
            run=run,
            item_id=parse_int(request.POST.get("item_id")) or 0,
            model_key=request.POST.get("model_key", "")[:100],
            preferred=request.POST.get("preferred", ""),
            user=request.user,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("eval_run_samples", run.pk)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ) or not back.startswith(reverse("eval_run_samples", args=[run.pk])):
        back = reverse("eval_run_samples", args=[run.pk])
    return redirect(f"{back}#item-{verdict.item_id}")
