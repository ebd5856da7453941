from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status

from distillapp.accounts import services
from distillapp.accounts.access import get_org_for_user
from distillapp.accounts.models import Invitation, Membership, Role
from distillapp.accounts.selectors import (
    audit_events_for_org,
    invitations_pending,
    memberships_for_user,
    org_members,
)

router = Router(tags=["organisations"])


class OrgOut(Schema):
    id: int
    name: str
    role: str


class OrgIn(Schema):
    name: str


class MemberOut(Schema):
    username: str
    role: str


class MemberIn(Schema):
    username: str
    role: Role = Role.VIEWER


class RoleIn(Schema):
    role: Role


def _member_out(m: Membership) -> MemberOut:
    return MemberOut(username=m.user.username, role=m.role)


@router.get("/orgs", response=list[OrgOut])
def list_orgs(request: HttpRequest) -> list[OrgOut]:
    return [
        OrgOut(id=m.org_id, name=m.org.name, role=m.role)
        for m in memberships_for_user(request.user)
    ]


@router.post("/orgs", response={201: OrgOut})
def create_org(request: HttpRequest, payload: OrgIn) -> Status:
    org = services.organization_create(name=payload.name, owner=request.user)
    return Status(201, OrgOut(id=org.pk, name=org.name, role=Role.OWNER))


@router.get("/orgs/{org_id}/members", response=list[MemberOut])
def list_members(request: HttpRequest, org_id: int) -> list[MemberOut]:
    get_org_for_user(request.user, org_id)
    return [_member_out(m) for m in org_members(org_id)]


@router.post("/orgs/{org_id}/members", response={201: MemberOut})
def add_member(request: HttpRequest, org_id: int, payload: MemberIn) -> Status:
    org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    membership = services.membership_add(
        org=org, username=payload.username, role=payload.role, actor_membership=actor
    )
    return Status(201, _member_out(membership))


@router.patch("/orgs/{org_id}/members/{username}", response=MemberOut)
def set_member_role(request: HttpRequest, org_id: int, username: str, payload: RoleIn) -> MemberOut:
    _org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    membership = get_object_or_404(
        Membership.objects.select_related("user"), org_id=org_id, user__username=username
    )
    return _member_out(
        services.membership_set_role(
            membership=membership, role=payload.role, actor_membership=actor
        )
    )


@router.delete("/orgs/{org_id}/members/{username}", response={204: None})
def remove_member(request: HttpRequest, org_id: int, username: str) -> Status:
    _org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    membership = get_object_or_404(Membership, org_id=org_id, user__username=username)
    services.membership_remove(membership=membership, actor_membership=actor)
    return Status(204, None)


class InvitationOut(Schema):
    id: int
    role: str
    created_by: str | None
    created_at: datetime
    expires_at: datetime


class InvitationCreatedOut(InvitationOut):
    token: str = Field(description="Shown once; only its hash is stored.")
    url: str = Field(description="The link to send; opening it signs up (or accepts) and joins.")


class InvitationIn(Schema):
    role: Role = Role.REVIEWER
    days: int | None = Field(None, ge=1, description="Days until it expires (default 7).")


def _invitation_out(inv: Invitation) -> dict[str, Any]:
    return {
        "id": inv.pk,
        "role": inv.role,
        "created_by": inv.created_by.username if inv.created_by else None,
        "created_at": inv.created_at,
        "expires_at": inv.expires_at,
    }


@router.get("/orgs/{org_id}/invitations", response=list[InvitationOut])
def list_invitations(request: HttpRequest, org_id: int) -> list[dict[str, Any]]:
    """Pending invitations (not used, revoked or expired). Admins and owners."""
    get_org_for_user(request.user, org_id, Role.ADMIN)
    return [_invitation_out(inv) for inv in invitations_pending(org_id)]


@router.post("/orgs/{org_id}/invitations", response={201: InvitationCreatedOut})
def create_invitation(request: HttpRequest, org_id: int, payload: InvitationIn) -> Status:
    org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    invitation, plain = services.invitation_create(
        org=org, role=payload.role, actor_membership=actor, days=payload.days
    )
    url = request.build_absolute_uri(reverse("invitation_accept") + f"?token={plain}")
    return Status(201, {**_invitation_out(invitation), "token": plain, "url": url})


@router.delete("/orgs/{org_id}/invitations/{invitation_id}", response={204: None})
def revoke_invitation(request: HttpRequest, org_id: int, invitation_id: int) -> Status:
    """Revoke a pending invitation; revoking one already used or revoked is a no-op."""
    _org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    invitation = get_object_or_404(
        Invitation.objects.select_related("org"), pk=invitation_id, org_id=org_id
    )
    services.invitation_revoke(invitation=invitation, actor_membership=actor)
    return Status(204, None)


class AuditEventOut(Schema):
    id: int
    created_at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


class AuditQuery(Schema):
    before: int | None = Field(None, description="Only events older than this event id.")
    limit: int = Field(100, ge=1, le=500)


@router.get("/orgs/{org_id}/audit", response=list[AuditEventOut])
def list_audit_events(
    request: HttpRequest, org_id: int, query: Query[AuditQuery]
) -> list[dict[str, Any]]:
    """The organisation's audit log, newest first. Owners only; page with `before`."""
    get_org_for_user(request.user, org_id, Role.OWNER)
    return [
        {
            "id": e.pk,
            "created_at": e.created_at,
            "actor": e.actor_name,
            "action": e.action,
            "target": e.target,
            "details": e.details,
        }
        for e in audit_events_for_org(org_id, before=query.before, limit=query.limit)
    ]
