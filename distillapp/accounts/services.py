"""Writes for organisations, memberships, invitations, users, API tokens and the audit log."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from distillapp.accounts.models import (
    ApiToken,
    AuditEvent,
    Invitation,
    Membership,
    Organization,
    Role,
)

TOKEN_PREFIX = "dst_"
INVITATION_PREFIX = "inv_"


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
    added = Membership.objects.create(org=org, user=user, role=role)
    audit_record(
        org=org,
        actor=actor_membership.user,
        action="member.add",
        target=user.username,
        details={"role": role},
    )
    return added


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
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        org=membership.org,
        actor=actor_membership.user,
        action="member.role",
        target=membership.user.username,
        details={"from": previous, "to": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor_membership: Membership) -> None:
    if membership.role == Role.OWNER:
        if actor_membership.role != Role.OWNER:
            raise PermissionDenied("Only owners can remove an owner.")
        _ensure_another_owner(membership)
    audit_record(
        org=membership.org,
        actor=actor_membership.user,
        action="member.remove",
        target=membership.user.username,
        details={"role": membership.role},
    )
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
    audit_record(
        org=None,
        actor=user,
        action="token.create",
        target=token.name,
        details={"prefix": token.prefix},
    )
    return token, plain


def api_token_revoke(*, user: Any, token_id: int) -> bool:
    revoked = bool(
        ApiToken.objects.filter(pk=token_id, user=user, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    )
    if revoked:
        token = ApiToken.objects.get(pk=token_id)
        audit_record(
            org=None,
            actor=user,
            action="token.revoke",
            target=token.name,
            details={"prefix": token.prefix},
        )
    return revoked


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


# --- audit log -------------------------------------------------------------------------------


def audit_record(
    *,
    org: Organization | None,
    actor: Any | None,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the audit log. `org=None` for a user's own actions (tokens, password);
    owners see those for the people in their organisation. `actor=None` means the user of the
    request being served, if any, else "system" (a task or a command)."""
    from distillapp.accounts.middleware import request_user

    if actor is None:
        actor = request_user()
    actor_user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        org=org,
        actor=actor_user,
        actor_name=getattr(actor_user, "username", "") or "system",
        action=action,
        target=str(target)[:300],
        details=details or {},
    )


# --- users -----------------------------------------------------------------------------------


def user_create(*, username: str, password: str) -> Any:
    """Create an active user; the password must pass the configured validators."""
    user_model = get_user_model()
    username = username.strip()
    if not username:
        raise ValidationError({"username": "Choose a username."})
    candidate = user_model(username=username)
    try:
        candidate.full_clean(exclude=["password"])
    except ValidationError as exc:
        raise ValidationError({"username": exc.message_dict.get("username", exc.messages)}) from exc
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from exc
    try:
        with transaction.atomic():
            return user_model.objects.create_user(username=username, password=password)
    except IntegrityError as exc:
        raise ValidationError({"username": f"The username {username!r} is taken."}) from exc


def user_set_password(*, user: Any, password: str, actor: Any | None) -> None:
    """Set a new password (validated). The user's other sessions end; the caller keeps its own
    with `update_session_auth_hash`. `actor` is who did it (None for the reset command)."""
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from exc
    user.set_password(password)
    user.save(update_fields=["password"])
    audit_record(
        org=None,
        actor=actor,
        # Changed by the user themself, or reset by someone else (None: the reset command).
        action="password.change" if actor is not None and actor.pk == user.pk else "password.reset",
        target=user.username,
    )


# --- invitations -----------------------------------------------------------------------------


def invitation_create(
    *, org: Organization, role: str, actor_membership: Membership, days: int | None = None
) -> tuple[Invitation, str]:
    """Create a single-use invitation; returns the row and the plain token (shown once)."""
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    if role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only owners can invite owners.")
    max_days = settings.INVITATION_MAX_DAYS
    days = settings.INVITATION_DEFAULT_DAYS if days is None else days
    if not 1 <= days <= max_days:
        raise ValidationError({"days": f"An invitation lasts between 1 and {max_days} days."})
    plain = INVITATION_PREFIX + secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        org=org,
        role=role,
        token_hash=hash_token(plain),
        created_by=actor_membership.user,
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit_record(
        org=org,
        actor=actor_membership.user,
        action="invitation.create",
        target=f"invitation #{invitation.pk}",
        details={"role": role, "expires_at": invitation.expires_at.isoformat()},
    )
    return invitation, plain


def invitation_revoke(*, invitation: Invitation, actor_membership: Membership) -> bool:
    """Revoke a pending invitation. Idempotent: revoking twice (or after use) returns False."""
    if invitation.role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only owners can revoke an invitation for an owner.")
    revoked = bool(
        Invitation.objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
    )
    if revoked:
        audit_record(
            org=invitation.org,
            actor=actor_membership.user,
            action="invitation.revoke",
            target=f"invitation #{invitation.pk}",
            details={"role": invitation.role},
        )
    return revoked


def invitation_pending(*, token: str) -> Invitation | None:
    """The usable invitation for a plain token, or None (unknown, used, revoked or expired)."""
    if not token:
        return None
    return (
        Invitation.objects.select_related("org")
        .filter(
            token_hash=hash_token(token),
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .first()
    )


_INVALID_INVITATION = "This invitation link is not valid any more (used, revoked or expired)."


@transaction.atomic
def invitation_accept(*, token: str, user: Any) -> Membership:
    """Join the invitation's organisation. Single use: a conditional update claims the
    invitation, so two people opening the same link cannot both join."""
    invitation = invitation_pending(token=token)
    if invitation is None:
        raise ValidationError({"token": _INVALID_INVITATION})
    if Membership.objects.filter(org=invitation.org, user=user).exists():
        raise ValidationError({"token": f"You are already a member of {invitation.org.name}."})
    claimed = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(accepted_at=timezone.now(), accepted_by=user)
    if not claimed:
        raise ValidationError({"token": _INVALID_INVITATION})
    membership = Membership.objects.create(org=invitation.org, user=user, role=invitation.role)
    audit_record(
        org=invitation.org,
        actor=user,
        action="invitation.accept",
        target=user.username,
        details={"role": invitation.role, "invitation": invitation.pk},
    )
    return membership


@transaction.atomic
def invitation_accept_new_user(*, token: str, username: str, password: str) -> Membership:
    """Create an account and join in one step; nothing is created when the link is not valid."""
    if invitation_pending(token=token) is None:
        raise ValidationError({"token": _INVALID_INVITATION})
    user = user_create(username=username, password=password)
    return invitation_accept(token=token, user=user)
