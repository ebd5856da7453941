from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from distillapp.accounts import services
from distillapp.accounts.access import get_org_for_user, membership_for
from distillapp.accounts.models import Membership, Role, role_at_least
from distillapp.accounts.selectors import SESSION_ORG_KEY, api_tokens_for_user, org_members
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


@login_required
@require_GET
def org_members_page(request: HtmxHttpRequest, org_id: int) -> HttpResponse:
    org, membership = get_org_for_user(request.user, org_id)
    return render(
        request,
        "accounts/members.html",
        {
            "org": org,
            "membership": membership,
            "members": org_members(org_id),
            "roles": Role.choices,
            "can_manage": role_at_least(membership.role, Role.ADMIN),
        },
    )


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
        from django.http import Http404

        raise Http404("Not found.")
    messages.success(request, "Token revoked.")
    return redirect("tokens")
