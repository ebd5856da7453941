"""schemathesis over the evaluation operations only (tests/security/test_schemathesis.py covers
every operation; this runs the same checks on this app's, so its answers are checked even when
another app's operations are in flux)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from tests.security.test_schemathesis import CHECKS  # noqa: E402

pytestmark = [pytest.mark.schemathesis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def same_connection():
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_evaluation_operations_answer_within_their_declared_responses(world, same_connection):
    from distillapp.accounts.services import api_token_create
    from distillapp.wsgi import application

    _t, plain = api_token_create(user=world["alice"], name="schemathesis")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)
    headers = {"Authorization": f"Bearer {plain}"}
    failures: list[str] = []
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if "eval" not in operation.path:
            continue
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
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
    assert len(labels) == 17, labels
    assert not failures, "\n\n".join(failures)
