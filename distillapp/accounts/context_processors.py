from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from distillapp.accounts.selectors import memberships_for_user


def organizations(request: HttpRequest) -> dict[str, Any]:
    if not request.user.is_authenticated:
        return {}
    return {
        "current_membership": getattr(request, "membership", None),
        "user_memberships": memberships_for_user(request.user),
    }
