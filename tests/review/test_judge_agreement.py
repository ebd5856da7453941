"""Judge–human agreement: computed by the review app from the filters' verdicts and the reviews;
the filters page and API get it from review URLs (filters never import review)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from distillapp.filters.models import VerdictState
from distillapp.review.models import Review
from distillapp.review.selectors import judge_agreement, judge_agreement_or_none
from tests.conftest import login
from tests.factories import CompletionVerdictFactory

pytestmark = pytest.mark.django_db


def _judged(project, score, decision, reviewer):
    verdict = CompletionVerdictFactory(
        completion__job__project=project,
        state=VerdictState.PASSED,
        flags=[],
        reasons={},
        judge_score=score,
    )
    Review.objects.create(
        completion=verdict.completion, project=project, reviewer=reviewer, decision=decision
    )


def test_judge_agreement_counts_reviews_against_the_threshold(project, bob, alice):
    assert judge_agreement(project=project) == {"agree": 0, "total": 0, "rate": None}
    cases = [
        (9, "approve", True),
        (8, "edit", True),
        (3, "reject", True),
        (9, "reject", False),
        (2, "approve", False),
        (7, "skip", None),
    ]
    for score, decision, _agrees in cases:
        _judged(project, score, decision, bob)
    unscored = CompletionVerdictFactory(
        completion__job__project=project, state=VerdictState.PASSED, judge_score=None
    )
    Review.objects.create(
        completion=unscored.completion, project=project, reviewer=alice, decision="approve"
    )
    assert judge_agreement(project=project) == {"agree": 3, "total": 5, "rate": 0.6}
    assert judge_agreement_or_none(project=project) == judge_agreement(project=project)


def test_judge_agreement_follows_the_filters_threshold(project, bob):
    _judged(project, 6, "approve", bob)
    assert judge_agreement(project=project)["agree"] == 1  # default threshold 6: 6 keeps
    project.settings = {**project.settings, "filters": {"judge_threshold": 7}}
    project.save(update_fields=["settings"])
    assert judge_agreement(project=project)["agree"] == 0


def test_the_filters_page_loads_the_figure_from_the_review_fragment(project, vera, bob):
    _judged(project, 9, "approve", bob)
    _judged(project, 9, "reject", bob)
    client = login(vera)
    url = reverse("review_judge_agreement", args=[project.pk])
    page = client.get(reverse("filters_list", args=[project.pk])).content.decode()
    assert f'hx-get="{url}"' in page and 'hx-trigger="load"' in page
    section = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert f'hx-get="{url}"' in section
    fragment = client.get(url, HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200
    assert "<strong>1/2</strong> judge agrees with reviewers" in fragment.content.decode()


def test_the_fragment_is_empty_until_a_judged_completion_is_reviewed(project, vera):
    body = login(vera).get(reverse("review_judge_agreement", args=[project.pk])).content.decode()
    assert "judge agrees" not in body


def test_the_api_serves_the_figure_on_a_review_endpoint(project, vera, bob, charlie):
    _judged(project, 2, "reject", bob)
    path = f"/api/v1/projects/{project.pk}/review/judge-agreement"
    assert login(vera).get(path).json() == {"agreement": {"agree": 1, "total": 1, "rate": 1.0}}
    assert login(charlie).get(path).status_code == 404
    assert Client().get(path).status_code == 401
    # It left the filters summary, which no longer reads reviews.
    summary = login(vera).get(f"/api/v1/projects/{project.pk}/filters/summary").json()
    assert "agreement" not in summary
