from __future__ import annotations

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router, Schema

from distillapp.accounts import services
from distillapp.accounts.access import get_org_for_user
from distillapp.accounts.models import Membership, Role
from distillapp.accounts.selectors import memberships_for_user, org_members

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
def create_org(request: HttpRequest, payload: OrgIn) -> tuple[int, OrgOut]:
    org = services.organization_create(name=payload.name, owner=request.user)
    return 201, OrgOut(id=org.pk, name=org.name, role=Role.OWNER)


@router.get("/orgs/{org_id}/members", response=list[MemberOut])
def list_members(request: HttpRequest, org_id: int) -> list[MemberOut]:
    get_org_for_user(request.user, org_id)
    return [_member_out(m) for m in org_members(org_id)]


@router.post("/orgs/{org_id}/members", response={201: MemberOut})
def add_member(request: HttpRequest, org_id: int, payload: MemberIn) -> tuple[int, MemberOut]:
    org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    membership = services.membership_add(
        org=org, username=payload.username, role=payload.role, actor_membership=actor
    )
    return 201, _member_out(membership)


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
def remove_member(request: HttpRequest, org_id: int, username: str) -> tuple[int, None]:
    _org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    membership = get_object_or_404(Membership, org_id=org_id, user__username=username)
    services.membership_remove(membership=membership, actor_membership=actor)
    return 204, None
