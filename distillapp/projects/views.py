from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from distillapp.accounts.access import get_org_for_user
from distillapp.accounts.models import Role, role_at_least
from distillapp.core.http import HtmxHttpRequest, form_errors
from distillapp.projects import services
from distillapp.projects.access import get_project_for_user
from distillapp.projects.sections import project_sections
from distillapp.projects.selectors import projects_for_user


@login_required
@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    membership = request.membership
    projects = projects_for_user(request.user, membership.org_id) if membership else []
    return render(
        request,
        "projects/home.html",
        {
            "projects": projects,
            "can_manage": membership is not None and role_at_least(membership.role, Role.ADMIN),
        },
    )


@login_required
@require_POST
def project_create(request: HtmxHttpRequest) -> HttpResponse:
    membership = request.membership
    if membership is None:
        messages.error(request, "Create or join an organisation first.")
        return redirect("home")
    org, _m = get_org_for_user(request.user, membership.org_id, Role.ADMIN)
    try:
        project = services.project_create(
            org=org,
            name=request.POST.get("name", ""),
            guidelines_md=request.POST.get("guidelines_md", ""),
            created_by=request.user,
        )
    except ValidationError as exc:
        return render(
            request,
            "projects/home.html",
            {
                "projects": projects_for_user(request.user, org.pk),
                "can_manage": True,
                "errors": form_errors(exc),
                "name": request.POST.get("name", ""),
            },
            status=422,
        )
    messages.success(request, f"Created project {project.name}.")
    return redirect("project_detail", project_id=project.pk)


@login_required
@require_GET
def project_detail(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, membership = get_project_for_user(request.user, project_id)
    return render(
        request,
        "projects/detail.html",
        {
            "project": project,
            "membership": membership,
            "can_manage": role_at_least(membership.role, Role.ADMIN),
            "sections": project_sections(project=project, membership=membership),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, membership = get_project_for_user(request.user, project_id, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            services.project_update(
                project=project,
                name=request.POST.get("name", project.name),
                guidelines_md=request.POST.get("guidelines_md", project.guidelines_md),
            )
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            messages.success(request, "Project settings saved.")
            return redirect("project_detail", project_id=project.pk)
    return render(
        request,
        "projects/settings.html",
        {"project": project, "membership": membership, "errors": errors},
        status=422 if errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_delete(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project, _membership = get_project_for_user(request.user, project_id, Role.ADMIN)
    if request.method == "POST":
        if request.POST.get("confirm_name", "").strip() != project.name:
            messages.error(request, "Type the project's name to confirm.")
            return render(request, "projects/delete.html", {"project": project}, status=422)
        name = project.name
        services.project_delete(project=project, actor=request.user)
        messages.success(request, f"Deleted project {name}.")
        return redirect("home")
    return render(request, "projects/delete.html", {"project": project})
