from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from distillapp.accounts.selectors import current_membership


class CurrentOrganizationMiddleware:
    """Attach the user's current organisation membership (from the session) to the request, lazily."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.utils.functional import SimpleLazyObject

        request.membership = SimpleLazyObject(lambda: current_membership(request))  # type: ignore[attr-defined]
        return self.get_response(request)
