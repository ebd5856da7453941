from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.http import HttpRequest, HttpResponse

from distillapp.accounts.selectors import current_membership

# The request being served, so the audit log can name who acted in services that are not given
# the user (teacher and review services). Read lazily: API token auth sets request.user later.
_current_request: ContextVar[HttpRequest | None] = ContextVar("current_request", default=None)


def request_user() -> Any | None:
    """The authenticated user of the request being served, or None (tasks, commands)."""
    request = _current_request.get()
    user = getattr(request, "user", None)
    return user if getattr(user, "is_authenticated", False) else None


class CurrentOrganizationMiddleware:
    """Attach the user's current organisation membership (from the session) to the request, lazily."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.utils.functional import SimpleLazyObject

        request.membership = SimpleLazyObject(lambda: current_membership(request))  # type: ignore[attr-defined]
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)
