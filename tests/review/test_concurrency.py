from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from distillapp.accounts.models import Role
from distillapp.review import services
from distillapp.review.models import Review, ReviewLease
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overlap", [1, 2])
def test_concurrent_reviewers_never_get_an_item_beyond_the_overlap(overlap, make_completions):
    org = OrganizationFactory()
    project = ProjectFactory(org=org, settings={"review": {"overlap": overlap}})
    reviewers = []
    for i in range(8):
        user = UserFactory(username=f"r{overlap}-{i}")
        MembershipFactory(user=user, org=org, role=Role.REVIEWER)
        reviewers.append(user)
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
