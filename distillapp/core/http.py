from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from django_htmx.middleware import HtmxDetails

    from distillapp.accounts.models import Membership


class HtmxHttpRequest(HttpRequest):
    """HttpRequest as our middleware leaves it: htmx details and the current membership."""

    htmx: HtmxDetails
    membership: Membership | None


def form_errors(exc: object) -> dict[str, list[str]]:
    """A Django ValidationError as {field: [messages]} for inline form errors."""
    message_dict = getattr(exc, "message_dict", None)
    if message_dict is not None:
        return dict(message_dict)
    return {"__all__": list(getattr(exc, "messages", [str(exc)]))}


def parse_int(value: object) -> int | None:
    """A form or query value as an int, or None when it is missing or not a number."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def parse_float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def polled_partial(
    request: HttpRequest, template: str, context: dict[str, Any], *, active: bool
) -> HttpResponse:
    """A progress partial that HTMX polls: rendered from the row it reads while the run goes on.
    Once the run has ended: 286 (stop polling) and `HX-Refresh`, so the page reloads once and
    shows what the end brought outside the partial (artefacts, a version's diff and lineage, an
    eval run's scores, the verdict list) instead of a finished badge above stale sections."""
    from django.shortcuts import render
    from django_htmx.http import HttpResponseStopPolling

    response = render(request, template, context)
    if active:
        return response
    stop = HttpResponseStopPolling(response.content)
    stop["HX-Refresh"] = "true"
    return stop
