"""The access matrix (tests/test_access_matrix.py) on the evaluation routes alone, so this app's
URLs are checked even while another app's routes are still missing their builders."""

from __future__ import annotations

import pytest

from tests import test_access_matrix as matrix

EVAL_ROUTES = [r for r in matrix.ROUTES if "eval" in r]


def test_every_evaluation_route_is_in_the_matrix():
    assert "eval-sets/<int:eval_set_id>/" in EVAL_ROUTES
    assert "api/v1/eval-sets/<eval_set_id>/items" in EVAL_ROUTES
    assert "api/v1/eval-items/<eval_item_id>/review" in EVAL_ROUTES
    assert "projects/<int:project_id>/evaluation/review/" in EVAL_ROUTES


@pytest.fixture
def eval_routes_only(monkeypatch):
    monkeypatch.setattr(matrix, "ROUTES", EVAL_ROUTES)


@pytest.mark.django_db
def test_outsider_gets_404_on_evaluation(world, eval_routes_only):
    matrix.test_outsider_gets_404_everywhere(world)


@pytest.mark.django_db
def test_viewer_reads_but_never_writes_evaluation(world, eval_routes_only):
    matrix.test_viewer_can_read_but_never_write(world)


@pytest.mark.django_db
def test_reviewer_writes_only_references(world, eval_routes_only):
    matrix.test_reviewer_writes_only_to_review_endpoints(world)


@pytest.mark.django_db
def test_admin_reads_every_evaluation_page(world, eval_routes_only):
    matrix.test_admin_can_read_every_object_page(world)


@pytest.mark.django_db
def test_anonymous_gets_login_or_401_on_evaluation(world, eval_routes_only):
    matrix.test_anonymous_is_sent_to_login_or_gets_401(world)
