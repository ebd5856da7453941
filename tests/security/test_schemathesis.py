"""schemathesis over every operation of /api/v1/openapi.json, in-process through WSGI, signed in
with an owner's API token: no 5xx, and every answer is one the operation declares, in its shape.

Bounded for CI: a few generated examples per operation (about a minute in all).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# No test transaction around the requests: on PostgreSQL a value the database refuses (NUL bytes)
# aborts the transaction it happens in, which in production is only that request's statement.
pytestmark = [pytest.mark.schemathesis, pytest.mark.django_db(transaction=True)]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(world, strict_outbound):
    from distillapp.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)


@pytest.fixture
def token(world):
    from distillapp.accounts.services import api_token_create

    _token, plain = api_token_create(user=world["alice"], name="schemathesis")
    return plain


@pytest.fixture
def same_connection():
    """Requests go through the WSGI app in this thread: keep Django from closing the test's
    connection at the end of each request, as its own test client does."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_every_operation_answers_within_its_declared_responses(
    api_schema, token, same_connection
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=4,
            phases=[Phase.explicit, Phase.generate],
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - report every operation
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations >= 40
    assert not failures, "\n\n".join(failures)
