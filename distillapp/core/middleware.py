from __future__ import annotations

from collections.abc import Callable

from django.db import DataError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


class DatabaseInputErrorMiddleware:
    """A value the database refuses (NUL bytes, out-of-range numbers) is bad input: 400, not 500.

    SQLite raises OverflowError for integers past 64 bits, PostgreSQL a DataError.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DataError | OverflowError):
            return HttpResponseBadRequest(
                "A value in the request is not acceptable to the database."
            )
        return None
