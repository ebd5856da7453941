from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from distillapp.accounts.models import ApiToken, AuditEvent, Invitation, Membership

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


def invitations_pending(org_id: int) -> QuerySet[Invitation]:
    return (
        Invitation.objects.filter(
            org_id=org_id,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .select_related("created_by")
        .order_by("-created_at")
    )


def audit_events_for_org(
    org_id: int, *, before: int | None = None, limit: int = 100
) -> QuerySet[AuditEvent]:
    """The organisation's events, newest first, plus the personal events (tokens, password) of
    its current members. `before` is an event id for paging."""
    member_ids = Membership.objects.filter(org_id=org_id).values("user_id")
    events = AuditEvent.objects.filter(
        Q(org_id=org_id) | Q(org__isnull=True, actor_id__in=member_ids)
    )
    if before is not None:
        events = events.filter(pk__lt=before)
    return events.select_related("org").order_by("-pk")[:limit]
