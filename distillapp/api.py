"""The REST API (django-ninja) at /api/v1/. Each app contributes a router from its `api.py`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Swagger
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer, django_auth

from distillapp.accounts.services import api_token_authenticate
from distillapp.core.cursor import InvalidCursor
from distillapp.core.openapi import add_error_responses


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = api_token_authenticate(token)
        if user is not None:
            request.user = user
        return user


class DistilleryAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> Any:
        # Every operation declares the `{detail, errors}` answers of the handlers below.
        return add_error_responses(super().get_openapi_schema(**kwargs))


api = DistilleryAPI(
    title="Distillery API",
    version="1",
    urls_namespace="api",
    auth=[BearerToken(), django_auth],
    # Swagger UI from ninja's bundled static files ("ninja" is in INSTALLED_APPS), no CDN;
    # "Authorize" takes a bearer token and keeps it across reloads for "Try it out".
    docs=Swagger(settings={"persistAuthorization": True}),
)


def _errors_from_django(exc: DjangoValidationError) -> list[dict[str, Any]]:
    if hasattr(exc, "error_dict"):
        return [
            {"field": field, "message": str(message)}
            for field, messages in exc.message_dict.items()
            for message in messages
        ]
    return [{"message": message} for message in exc.messages]


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": "Not found."}, status=404)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden."}, status=403)


@api.exception_handler(AuthenticationError)
def _unauthorised(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": "Authentication required."}, status=401)


@api.exception_handler(DjangoValidationError)
def _invalid(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    errors = _errors_from_django(exc)
    detail = errors[0]["message"] if errors else "Invalid input."
    return api.create_response(request, {"detail": detail, "errors": errors}, status=422)


@api.exception_handler(NinjaValidationError)
def _invalid_schema(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", [])), "message": e.get("msg", "")}
        for e in exc.errors
    ]
    return api.create_response(request, {"detail": "Invalid input.", "errors": errors}, status=422)


@api.exception_handler(InvalidCursor)
def _bad_cursor(request: HttpRequest, exc: Exception) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=400)


@api.exception_handler(DataError)
@api.exception_handler(OverflowError)
def _bad_value(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The database refused a value the schema let through (NUL bytes, out-of-range numbers,
    # over-long strings; SQLite raises OverflowError for ids past 64 bits): that is the caller's
    # input, so 400, not 500.
    return api.create_response(
        request, {"detail": "A value is not acceptable to the database."}, status=400
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)


def _register_routers() -> None:
    from distillapp.accounts.api import router as accounts_router
    from distillapp.datasets.api import router as datasets_router
    from distillapp.evaluation.api import router as evaluation_router
    from distillapp.filters.api import router as filters_router
    from distillapp.generation.api import router as generation_router
    from distillapp.projects.api import router as projects_router
    from distillapp.prompts.api import router as prompts_router
    from distillapp.review.api import router as review_router
    from distillapp.training.api import router as training_router

    for router in (
        accounts_router,
        projects_router,
        prompts_router,
        generation_router,
        filters_router,
        review_router,
        datasets_router,
        training_router,
        evaluation_router,
    ):
        api.add_router("/", router)


_register_routers()
