from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from distillapp.accounts import services
from distillapp.accounts.access import get_org_for_user, membership_for
from distillapp.accounts.models import Invitation, Membership, Role, role_at_least
from distillapp.accounts.selectors import (
    SESSION_ORG_KEY,
    api_tokens_for_user,
    audit_events_for_org,
    invitations_pending,
    org_members,
)
from distillapp.core.http import HtmxHttpRequest, form_errors, parse_int


def _flash_errors(request: HtmxHttpRequest, exc: ValidationError) -> None:
    for msgs in form_errors(exc).values():
        for msg in msgs:
            messages.error(request, msg)


@login_required
@require_POST
def org_switch(request: HtmxHttpRequest) -> HttpResponse:
    membership = membership_for(request.user, parse_int(request.POST.get("org_id")) or 0)
    if membership is None:
        messages.error(request, "You are not a member of that organisation.")
    else:
        request.session[SESSION_ORG_KEY] = membership.org_id
        messages.success(request, f"Switched to {membership.org.name}.")
    return redirect("home")


@login_required
@require_http_methods(["GET", "POST"])
def org_create(request: HtmxHttpRequest) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    name = ""
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            org = services.organization_create(name=name, owner=request.user)
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            request.session[SESSION_ORG_KEY] = org.pk
            messages.success(request, f"Created {org.name}. You are its owner.")
            return redirect("home")
    return render(
        request,
        "accounts/org_create.html",
        {"errors": errors, "name": name},
        status=422 if errors else 200,
    )


def _members_context(org: Any, membership: Membership, **extra: Any) -> dict[str, Any]:
    can_manage = role_at_least(membership.role, Role.ADMIN)
    return {
        "org": org,
        "membership": membership,
        "members": org_members(org.pk),
        "roles": Role.choices,
        "invite_roles": [
            (value, label)
            for value, label in Role.choices
            if value != Role.OWNER or membership.role == Role.OWNER
        ],
        "can_manage": can_manage,
        "is_owner": membership.role == Role.OWNER,
        "invitations": invitations_pending(org.pk) if can_manage else [],
        "invitation_days": settings.INVITATION_DEFAULT_DAYS,
        "invitation_max_days": settings.INVITATION_MAX_DAYS,
        **extra,
    }


@login_required
@require_GET
def org_members_page(request: HtmxHttpRequest, org_id: int) -> HttpResponse:
    org, membership = get_org_for_user(request.user, org_id)
    return render(request, "accounts/members.html", _members_context(org, membership))


@login_required
@require_POST
def org_member_add(request: HtmxHttpRequest, org_id: int) -> HttpResponse:
    org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    try:
        added = services.membership_add(
            org=org,
            username=request.POST.get("username", ""),
            role=request.POST.get("role", Role.VIEWER),
            actor_membership=actor,
        )
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        messages.success(
            request, f"Added {added.user.username} as {added.get_role_display().lower()}."
        )
    return redirect("org_members", org_id=org_id)


@login_required
@require_POST
def org_member_role(request: HtmxHttpRequest, org_id: int, username: str) -> HttpResponse:
    _org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    membership = get_object_or_404(
        Membership.objects.select_related("user"), org_id=org_id, user__username=username
    )
    try:
        services.membership_set_role(
            membership=membership, role=request.POST.get("role", ""), actor_membership=actor
        )
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        messages.success(request, f"{username} is now {membership.get_role_display().lower()}.")
    return redirect("org_members", org_id=org_id)


@login_required
@require_POST
def org_member_remove(request: HtmxHttpRequest, org_id: int, username: str) -> HttpResponse:
    _org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    membership = get_object_or_404(Membership, org_id=org_id, user__username=username)
    try:
        services.membership_remove(membership=membership, actor_membership=actor)
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        messages.success(request, f"Removed {username}.")
    return redirect("org_members", org_id=org_id)


@login_required
@require_GET
def tokens_page(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "accounts/tokens.html", {"tokens": api_tokens_for_user(request.user)})


@login_required
@require_POST
def token_create(request: HtmxHttpRequest) -> HttpResponse:
    token, plain = services.api_token_create(user=request.user, name=request.POST.get("name", ""))
    # The plain token is rendered once in this response and never again.
    return render(
        request,
        "accounts/tokens.html",
        {"tokens": api_tokens_for_user(request.user), "new_token": plain, "new_token_row": token},
    )


@login_required
@require_POST
def token_revoke(request: HtmxHttpRequest, token_id: int) -> HttpResponse:
    if not services.api_token_revoke(user=request.user, token_id=token_id):
        raise Http404("Not found.")
    messages.success(request, "Token revoked.")
    return redirect("tokens")


# --- invitations -----------------------------------------------------------------------------


@login_required
@require_POST
def invitation_create(request: HtmxHttpRequest, org_id: int) -> HttpResponse:
    org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    try:
        invitation, plain = services.invitation_create(
            org=org,
            role=request.POST.get("role", Role.REVIEWER),
            actor_membership=actor,
            days=parse_int(request.POST.get("days")),
        )
    except ValidationError as exc:
        _flash_errors(request, exc)
        return redirect("org_members", org_id=org_id)
    # The link is rendered once, in this response; only its hash is stored.
    link = request.build_absolute_uri(reverse("invitation_accept") + f"?token={plain}")
    response = render(
        request,
        "accounts/members.html",
        _members_context(org, actor, new_invitation=invitation, new_invitation_link=link),
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def invitation_revoke(request: HtmxHttpRequest, org_id: int, invitation_id: int) -> HttpResponse:
    _org, actor = get_org_for_user(request.user, org_id, Role.ADMIN)
    invitation = get_object_or_404(
        Invitation.objects.select_related("org"), pk=invitation_id, org_id=org_id
    )
    if services.invitation_revoke(invitation=invitation, actor_membership=actor):
        messages.success(request, "Invitation revoked; its link no longer works.")
    else:
        messages.info(request, "That invitation was already used or revoked.")
    return redirect("org_members", org_id=org_id)


@never_cache
@require_http_methods(["GET", "POST"])
def invitation_accept(request: HtmxHttpRequest) -> HttpResponse:
    """The page an invitation link opens: sign up (or accept, when logged in) and join."""
    token = request.POST.get("token") or request.GET.get("token", "")
    invitation = services.invitation_pending(token=token)
    errors: dict[str, list[str]] = {}
    username = ""
    if invitation is not None and request.method == "POST":
        try:
            if request.user.is_authenticated:
                membership = services.invitation_accept(token=token, user=request.user)
            else:
                username = request.POST.get("username", "")
                password = request.POST.get("password", "")
                if password != request.POST.get("password2", ""):
                    raise ValidationError({"password2": "The two passwords differ."})
                membership = services.invitation_accept_new_user(
                    token=token, username=username, password=password
                )
                login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            request.session[SESSION_ORG_KEY] = membership.org_id
            messages.success(
                request,
                f"Welcome to {membership.org.name}. You joined as "
                f"{membership.get_role_display().lower()}.",
            )
            return redirect("home")
    already_member = (
        invitation is not None
        and request.user.is_authenticated
        and membership_for(request.user, invitation.org_id) is not None
    )
    return render(
        request,
        "accounts/invitation_accept.html",
        {
            "invitation": invitation,
            "token": token,
            "errors": errors,
            "username": username,
            "already_member": already_member,
        },
        status=404 if invitation is None else (422 if errors else 200),
    )


@never_cache
@require_http_methods(["GET", "POST"])
def signup(request: HtmxHttpRequest) -> HttpResponse:
    """Open sign-up, off unless DISTILLERY_OPEN_SIGNUP is set: people join through invitations."""
    if not settings.OPEN_SIGNUP:
        raise Http404("Sign-up is by invitation.")
    if request.user.is_authenticated:
        return redirect("home")
    errors: dict[str, list[str]] = {}
    username = ""
    if request.method == "POST":
        username = request.POST.get("username", "")
        password = request.POST.get("password", "")
        try:
            if password != request.POST.get("password2", ""):
                raise ValidationError({"password2": "The two passwords differ."})
            user = services.user_create(username=username, password=password)
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, "Welcome. Create an organisation, or ask for an invitation.")
            return redirect("org_create")
    return render(
        request,
        "accounts/signup.html",
        {"errors": errors, "username": username},
        status=422 if errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def password_change(request: HtmxHttpRequest) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        new = request.POST.get("new_password", "")
        try:
            if not request.user.check_password(request.POST.get("old_password", "")):
                raise ValidationError({"old_password": "That is not your current password."})
            if new != request.POST.get("new_password2", ""):
                raise ValidationError({"new_password2": "The two new passwords differ."})
            services.user_set_password(user=request.user, password=new, actor=request.user)
        except ValidationError as exc:
            errors = form_errors(exc)
        else:
            # Keep this session; other sessions of the user end with the old password.
            update_session_auth_hash(request, request.user)  # type: ignore[arg-type]
            messages.success(request, "Password changed.")
            return redirect("password_change")
    return render(
        request, "accounts/password_change.html", {"errors": errors}, status=422 if errors else 200
    )


# --- audit log -------------------------------------------------------------------------------

AUDIT_PAGE_SIZE = 100


@login_required
@require_GET
def org_audit_page(request: HtmxHttpRequest, org_id: int) -> HttpResponse:
    org, _membership = get_org_for_user(request.user, org_id, Role.OWNER)
    before = parse_int(request.GET.get("before"))
    events = list(audit_events_for_org(org_id, before=before, limit=AUDIT_PAGE_SIZE + 1))
    return render(
        request,
        "accounts/audit.html",
        {
            "org": org,
            "events": events[:AUDIT_PAGE_SIZE],
            "older": events[AUDIT_PAGE_SIZE - 1].pk if len(events) > AUDIT_PAGE_SIZE else None,
        },
    )


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "open_signup": settings.OPEN_SIGNUP}


# --- login lockout (django-axes) -------------------------------------------------------------


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """What a locked-out login gets (AXES_LOCKOUT_CALLABLE): 429, and when to retry."""
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    response = render(
        request,
        "accounts/login.html",
        {
            "locked_out": True,
            "retry_seconds": seconds,
            "retry_at": timezone.now() + settings.AXES_COOLOFF_TIME,
        },
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
