"""Authorisation helpers. Outsiders get 404, never 403, so ids of other teams' objects leak nothing.

Members whose role is too low for an action get 403 (they know the object exists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

from distillapp.accounts.models import Membership, Organization, Role, role_at_least

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    from distillapp.projects.models import Project


def membership_for(user: AbstractBaseUser | AnonymousUser, org_id: int) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user_id=user.pk, org_id=org_id).select_related("org").first()


def require_role(membership: Membership | None, role: str) -> Membership:
    if membership is None:
        raise Http404("Not found.")
    if not role_at_least(membership.role, role):
        raise PermissionDenied(f"This needs the {role} role or higher.")
    return membership


def get_org_for_user(
    user: Any, org_id: int, role: str = Role.VIEWER
) -> tuple[Organization, Membership]:
    membership = require_role(membership_for(user, org_id), role)
    return membership.org, membership


def get_project_for_user(
    user: Any, project_id: int, role: str = Role.VIEWER
) -> tuple[Project, Membership]:
    from distillapp.projects.models import Project

    project = Project.objects.select_related("org").filter(pk=project_id).first()
    if project is None:
        raise Http404("Not found.")
    membership = require_role(membership_for(user, project.org_id), role)
    return project, membership


def get_completion_for_user(
    user: Any, completion_id: int, role: str = Role.VIEWER
) -> tuple[Any, Membership]:
    """A completion (with its job, project and prompt) checked against the user's role.

    Completions reach their project through their job, so get_scoped_object does not fit them.
    """
    from distillapp.generation.models import Completion

    completion = (
        Completion.objects.select_related("job__project__org", "prompt")
        .filter(pk=completion_id)
        .first()
    )
    if completion is None:
        raise Http404("Not found.")
    membership = require_role(membership_for(user, completion.job.project.org_id), role)
    return completion, membership


def get_scoped_object(
    user: Any, queryset: Any, pk: int, role: str = Role.VIEWER
) -> tuple[Any, Membership]:
    """Fetch any object with a `project` relation, checking the user's role in its organisation."""
    obj = queryset.select_related("project", "project__org").filter(pk=pk).first()
    if obj is None:
        raise Http404("Not found.")
    membership = require_role(membership_for(user, obj.project.org_id), role)
    return obj, membership
