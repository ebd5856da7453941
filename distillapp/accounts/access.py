"""Authorisation helpers for organisations (projects and what is in them: distillapp.projects.access). Outsiders get 404, never 403, so ids of other teams' objects leak nothing.

Members whose role is too low for an action get 403 (they know the object exists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

from distillapp.accounts.models import Membership, Organization, Role, role_at_least

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


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
