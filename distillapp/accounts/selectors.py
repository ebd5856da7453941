from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest

from distillapp.accounts.models import ApiToken, Membership

SESSION_ORG_KEY = "current_org_id"


def memberships_for_user(user: Any) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("org").order_by("org__name")


def current_membership(request: HttpRequest) -> Membership | None:
    if not request.user.is_authenticated:
        return None
    memberships = memberships_for_user(request.user)
    org_id = request.session.get(SESSION_ORG_KEY)
    if org_id is not None:
        chosen = memberships.filter(org_id=org_id).first()
        if chosen is not None:
            return chosen
    return memberships.first()


def org_members(org_id: int) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(org_id=org_id).select_related("user").order_by("user__username")
    )


def api_tokens_for_user(user: Any) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at")
