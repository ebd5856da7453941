"""Authorisation for projects and every object that hangs off one. Outsiders get 404, never 403,
so ids of other teams' objects leak nothing; members whose role is too low get 403."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from distillapp.accounts.access import membership_for, require_role
from distillapp.accounts.models import Membership, Role
from distillapp.projects.models import Project


def get_project_for_user(
    user: Any, project_id: int, role: str = Role.VIEWER
) -> tuple[Project, Membership]:
    project = Project.objects.select_related("org").filter(pk=project_id).first()
    if project is None:
        raise Http404("Not found.")
    membership = require_role(membership_for(user, project.org_id), role)
    return project, membership


def get_scoped_object(
    user: Any, queryset: Any, pk: int, role: str = Role.VIEWER
) -> tuple[Any, Membership]:
    """Fetch any object with a `project` relation, checking the user's role in its organisation."""
    obj = queryset.select_related("project", "project__org").filter(pk=pk).first()
    if obj is None:
        raise Http404("Not found.")
    membership = require_role(membership_for(user, obj.project.org_id), role)
    return obj, membership
