from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from distillapp.accounts.models import Role
from distillapp.review import services
from distillapp.review.models import ItemState, Review, ReviewAction, ReviewItem, ReviewLease
from tests.conftest import USING_POSTGRES
from tests.factories import MembershipFactory, OrganizationFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.skipif(
    not USING_POSTGRES,
    reason="SQLite has a single writer; SKIP LOCKED concurrency needs PostgreSQL",
)


def _run(reviewers, target):
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(reviewers))

    def worker(user):
        try:
            barrier.wait()
            target(user)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(u,)) for u in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def _project_with_reviewers(overlap: int, count: int, prefix: str):
    org = OrganizationFactory()
    project = ProjectFactory(org=org, settings={"review": {"overlap": overlap}})
    reviewers = []
    for i in range(count):
        user = UserFactory(username=f"{prefix}-{i}")
        MembershipFactory(user=user, org=org, role=Role.REVIEWER)
        reviewers.append(user)
    return project, reviewers


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overlap", [1, 2])
def test_concurrent_reviewers_never_get_an_item_beyond_the_overlap(overlap, make_completions):
    project, reviewers = _project_with_reviewers(overlap, 8, f"r{overlap}")
    make_completions(project, 20)
    handed: list[tuple[int, int]] = []
    lock = threading.Lock()

    def review_all(user):
        while True:
            c = services.review_claim_next(project=project, reviewer=user)
            if c is None:
                return
            with lock:
                handed.append((c.pk, user.pk))
            services.review_decide(completion=c, reviewer=user, decision="approve")

    _run(reviewers, review_all)

    per_item = Counter(c for c, _u in handed)
    assert len(per_item) == 20
    assert set(per_item.values()) == {overlap}  # every item exactly k times, never more
    assert len(set(handed)) == len(handed)  # never the same reviewer twice
    assert Review.objects.count() == 20 * overlap
    assert not ReviewLease.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_overlap_three_under_load_hands_every_item_to_exactly_three_reviewers(make_completions):
    project, reviewers = _project_with_reviewers(3, 10, "k3")
    make_completions(project, 30)
    handed: list[tuple[int, int]] = []
    lock = threading.Lock()

    def review_all(user):
        while (c := services.review_claim_next(project=project, reviewer=user)) is not None:
            with lock:
                handed.append((c.pk, user.pk))
            decision = "approve" if (c.pk + user.pk) % 3 else "reject"
            services.review_decide(
                completion=c, reviewer=user, decision=decision, reason="Unhelpful"
            )

    _run(reviewers, review_all)

    assert set(Counter(c for c, _u in handed).values()) == {3}
    assert len(set(handed)) == len(handed)
    assert Review.objects.count() == 30 * 3
    assert not ReviewLease.objects.exists()
    states = Counter(ReviewItem.objects.values_list("state", flat=True))
    assert states[ItemState.DONE] + states[ItemState.ADJUDICATION] == 30
    assert all(i.reviews_count == 3 for i in ReviewItem.objects.all())


@pytest.mark.django_db(transaction=True)
def test_the_same_decision_sent_from_several_tabs_at_once_is_recorded_once(make_completions):
    project, (user,) = _project_with_reviewers(1, 1, "tabs")
    make_completions(project, 1)
    completion = services.review_claim_next(project=project, reviewer=user)
    assert completion is not None

    def submit(_tab):
        services.review_decide(completion=completion, reviewer=user, decision="approve")

    _run([user] * 6, submit)

    assert Review.objects.filter(completion=completion).count() == 1
    assert ReviewAction.objects.filter(completion=completion).count() == 1
    item = ReviewItem.objects.get(completion=completion)
    assert (item.state, item.decision, item.reviews_count) == (ItemState.DONE, "approve", 1)
    assert not ReviewLease.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_reviewers_deciding_one_item_at_once_settle_it_from_all_their_reviews(make_completions):
    project, reviewers = _project_with_reviewers(4, 4, "same")
    (only,) = make_completions(project, 1)
    for user in reviewers:
        claimed = services.review_claim_next(project=project, reviewer=user)
        assert claimed is not None and claimed.pk == only.pk

    def decide(user):
        decision = "reject" if user == reviewers[0] else "approve"
        services.review_decide(completion=only, reviewer=user, decision=decision, reason="Unsafe")

    _run(reviewers, decide)

    item = ReviewItem.objects.get(completion=only)
    assert (item.state, item.reviews_count) == (ItemState.ADJUDICATION, 4)
    assert Review.objects.filter(completion=only).count() == 4
    assert not ReviewLease.objects.exists()
