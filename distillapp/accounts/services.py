"""Writes for organisations, memberships and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from distillapp.accounts.models import ApiToken, Membership, Organization, Role

TOKEN_PREFIX = "dst_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def organization_create(*, name: str, owner: Any) -> Organization:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the organisation a name."})
    if len(name) > 120:
        raise ValidationError({"name": "Keep the name under 120 characters."})
    if Organization.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": "An organisation with this name already exists."})
    org = Organization.objects.create(name=name)
    Membership.objects.create(user=owner, org=org, role=Role.OWNER)
    return org


def membership_add(
    *, org: Organization, username: str, role: str, actor_membership: Membership
) -> Membership:
    """Add a member by username. Only owners may grant the owner role."""
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    if role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only owners can make owners.")
    user = get_user_model().objects.filter(username=username.strip()).first()
    if user is None:
        raise ValidationError({"username": f"No user named {username!r}."})
    if Membership.objects.filter(org=org, user=user).exists():
        raise ValidationError({"username": f"{username} is already a member."})
    return Membership.objects.create(org=org, user=user, role=role)


@transaction.atomic
def membership_set_role(
    *, membership: Membership, role: str, actor_membership: Membership
) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    touches_owner = Role.OWNER in (role, membership.role)
    if touches_owner and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only owners can change an owner or make owners.")
    if membership.role == Role.OWNER and role != Role.OWNER:
        _ensure_another_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor_membership: Membership) -> None:
    if membership.role == Role.OWNER:
        if actor_membership.role != Role.OWNER:
            raise PermissionDenied("Only owners can remove an owner.")
        _ensure_another_owner(membership)
    membership.delete()


def _ensure_another_owner(membership: Membership) -> None:
    others = (
        Membership.objects.select_for_update()
        .filter(org_id=membership.org_id, role=Role.OWNER)
        .exclude(pk=membership.pk)
    )
    if not others.exists():
        raise ValidationError({"role": "An organisation needs at least one owner."})


def api_token_create(*, user: Any, name: str = "") -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plain token, which is never stored or shown again."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name.strip() or "API token", prefix=plain[:10], token_hash=hash_token(plain)
    )
    return token, plain


def api_token_revoke(*, user: Any, token_id: int) -> bool:
    return bool(
        ApiToken.objects.filter(pk=token_id, user=user, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    )


def api_token_authenticate(plain: str) -> Any | None:
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_token(plain), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user
