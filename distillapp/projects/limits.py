"""Request body limits, enforced before anything reads the body (so before the CSRF check).

CsrfViewMiddleware reads `request.POST` of every POST, which parses the whole body and spools
file parts to FILE_UPLOAD_TEMP_DIR: without this middleware a stranger with only a csrftoken cookie
could write gigabytes to disk through `/login/`. Each request gets the limit of its route and
caller:

- anonymous callers: REQUEST_MAX_BYTES_ANONYMOUS (login, sign-up, invitations: a few KiB);
- signed-in callers (session or API token): REQUEST_MAX_BYTES (forms, JSON);
- the upload routes, for members whose role may upload to that project: the upload limit plus
  room for the multipart framing. Below the memory threshold nothing is spooled, so nobody else
  ever makes a file on disk.

A declared Content-Length over the limit is refused at once. A chunked body (no Content-Length)
is read here up to the limit of ordinary requests and refused with 413 past it, then handed on
with its length set; uploads must declare their length (411), as browsers and curl do.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

UPLOAD_ROUTES = frozenset({"prompt_set_upload", "api:upload_prompt_set"})
_MULTIPART_ALLOWANCE = 1024 * 1024
_CHUNK = 64 * 1024


def _declared_length(request: HttpRequest) -> int | None:
    raw = request.META.get("CONTENT_LENGTH")
    if raw in (None, ""):
        return None
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return None


def _is_chunked(request: HttpRequest) -> bool:
    return "chunked" in str(request.META.get("HTTP_TRANSFER_ENCODING", "")).lower()


def _caller(request: HttpRequest) -> Any:
    """The signed-in user, from an API token or the session, or None. Cached for later layers."""
    from django.contrib.auth import get_user

    header = str(request.META.get("HTTP_AUTHORIZATION", ""))
    if header.lower().startswith("bearer ") and request.path_info.startswith("/api/"):
        from distillapp.accounts.services import api_token_authenticate

        return api_token_authenticate(header.split(" ", 1)[1].strip())
    if not hasattr(request, "session"):
        return None
    user = get_user(request)
    # AuthenticationMiddleware reuses this instead of loading the user again.
    request._cached_user = user  # type: ignore[attr-defined]
    return user if user.is_authenticated else None


def _may_upload(user: Any, kwargs: dict[str, Any]) -> bool:
    from distillapp.accounts.access import membership_for
    from distillapp.accounts.models import Role, role_at_least
    from distillapp.projects.models import Project

    try:
        project_id = int(kwargs.get("project_id", ""))
    except (TypeError, ValueError):
        return False
    org_id = Project.objects.filter(pk=project_id).values_list("org_id", flat=True).first()
    if org_id is None:
        return False
    membership = membership_for(user, org_id)
    return membership is not None and role_at_least(membership.role, Role.ADMIN)


def body_limit(request: HttpRequest) -> int:
    """How many body bytes this request may send."""
    # Never above the in-memory threshold: a body that fits in memory never spools a file.
    in_memory = int(settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
    user = _caller(request)
    if user is None:
        return min(int(settings.REQUEST_MAX_BYTES_ANONYMOUS), in_memory)
    limit = min(int(settings.REQUEST_MAX_BYTES), in_memory)
    if request.method == "POST":
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return limit
        if match.view_name in UPLOAD_ROUTES and _may_upload(user, match.kwargs):
            return int(settings.PROMPT_UPLOAD_MAX_BYTES) + _MULTIPART_ALLOWANCE
    return limit


def too_large(request: HttpRequest, limit: int, *, status: int = 413) -> HttpResponse:
    detail = (
        f"The request body is larger than the {limit:,} bytes allowed here."
        if status == 413
        else "Send a Content-Length header with this request."
    )
    if request.path_info.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": detail, "errors": []}, status=status)
    else:
        response = HttpResponse(detail, status=status, content_type="text/plain; charset=utf-8")
    response["Connection"] = "close"  # the rest of the body is never read
    return response


class RequestBodyLimitMiddleware:
    """Refuse bodies over the route's limit before the CSRF check (or anything else) reads them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = _declared_length(request)
        chunked = declared is None and _is_chunked(request)
        anonymous_limit = min(
            int(settings.REQUEST_MAX_BYTES_ANONYMOUS), int(settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
        )
        if (declared is not None and declared > anonymous_limit) or chunked:
            limit = body_limit(request)
            if declared is not None and declared > limit:
                return too_large(request, limit)
            if chunked:
                ordinary = min(limit, int(settings.REQUEST_MAX_BYTES))
                if limit > ordinary:
                    return too_large(request, limit, status=411)
                refused = self._buffer_chunked(request, ordinary)
                if refused is not None:
                    return refused
        return self.get_response(request)

    def _buffer_chunked(self, request: HttpRequest, limit: int) -> HttpResponse | None:
        # Django reads no body without a Content-Length; read it here, at most limit + 1 bytes,
        # so a chunked body is neither ignored nor read past its limit.
        stream = request.META["wsgi.input"]
        data = bytearray()
        while len(data) <= limit:
            chunk = stream.read(min(_CHUNK, limit + 1 - len(data)))
            if not chunk:
                break
            data += chunk
        if len(data) > limit:
            return too_large(request, limit)
        request.META["CONTENT_LENGTH"] = str(len(data))
        request._stream = LimitedStream(io.BytesIO(bytes(data)), len(data))  # type: ignore[attr-defined,assignment]
        return None
