"""Exact progress counts (the per-writer tally), undo order and when undo is offered."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from distillapp.accounts.models import Role
from distillapp.prompts.services import prompt_set_delete
from distillapp.review import services
from distillapp.review.models import (
    ItemState,
    ReviewItem,
    ReviewLease,
    ReviewQueueState,
    ReviewTally,
)
from distillapp.review.selectors import review_can_undo, review_progress
from distillapp.review.services.tally import count_items, tally_read, transition
from tests.conftest import login
from tests.factories import (
    CompletionVerdictFactory,
    GenerationJobFactory,
    MembershipFactory,
    TeacherFactory,
    UserFactory,
)

HX = {"HTTP_HX_REQUEST": "true"}


def _reviewer(org, name):
    user = UserFactory(username=name)
    MembershipFactory(user=user, org=org, role=Role.REVIEWER)
    return user


def _set(project, **review):
    project.settings = {
        **project.settings,
        "review": {**project.settings.get("review", {}), **review},
    }
    project.save(update_fields=["settings"])


def _exact(project):
    tallied, counted = tally_read(project=project), count_items(project=project)
    assert tallied == counted
    return counted


def _decide(project, who, decision="approve", **kw):
    c = services.review_claim_next(project=project, reviewer=who)
    assert c is not None
    services.review_decide(completion=c, reviewer=who, decision=decision, **kw)
    return c


def test_transition_moves_items_between_buckets():
    assert transition("open", None, "done", "approve", 3) == {
        "active": -3,
        "done": 3,
        "approved": 3,
    }
    assert transition("open", None, "leased", None) == {}
    assert transition("done", "approve", "done", "reject") == {"approved": -1}
    assert transition("done", "reject", "adjudication", None) == {"done": -1, "adjudication": 1}


def test_counts_match_the_items_after_every_kind_of_write(project, alice, bob, make_completions):
    rita = _reviewer(project.org, "rita")
    _set(project, overlap=2, order="plain")
    completions = make_completions(project, 10, sync=False)
    CompletionVerdictFactory(completion=completions[9], state="filtered")
    services.review_queue_sync(project=project, force=True)
    assert _exact(project) == {
        "active": 9,
        "done": 0,
        "adjudication": 0,
        "excluded": 1,
        "approved": 0,
    }

    # Two agreeing reviews settle an item; disagreeing ones send it to adjudication.
    a = _decide(project, bob)
    assert _exact(project)["active"] == 9
    services.review_claim_next(project=project, reviewer=rita)  # rita holds a (bob reviewed it)
    services.review_decide(completion=a, reviewer=rita, decision="edit", edited_text="Better.")
    assert _exact(project)["done"] == 1 and tally_read(project=project)["approved"] == 1
    b = _decide(project, bob)
    services.review_claim_next(project=project, reviewer=rita)
    services.review_decide(completion=b, reviewer=rita, decision="reject", reason="Unhelpful")
    assert _exact(project)["adjudication"] == 1
    # A changed mind on a done item: approve → reject makes it disagree.
    services.review_decide(completion=a, reviewer=rita, decision="reject", reason="Unhelpful")
    assert _exact(project)["adjudication"] == 2 and tally_read(project=project)["approved"] == 0
    services.review_adjudicate(completion=b, admin=alice, decision="approve")
    assert _exact(project)["approved"] == 1
    services.review_adjudicate(completion=b, admin=alice, decision="reject")  # a repeat overwrites
    assert _exact(project)["approved"] == 0

    # Undo walks back: rita's reject of a, then her reject of b (settled: refused, moves on).
    services.review_undo(project=project, reviewer=rita)
    assert _exact(project)["done"] == 2
    _decide(project, bob, decision="skip")
    services.review_undo(project=project, reviewer=bob)
    _exact(project)

    # Bulk approve and its undo, with a lease and a review on the bulk-approved items.
    c = _decide(project, bob)
    action = services.review_bulk_apply(project=project, actor=alice, decision="approve")
    after_bulk = _exact(project)
    assert after_bulk["active"] == 0 and after_bulk["approved"] == action.count + 1
    assert c.pk in {i.completion_id for i in ReviewItem.objects.filter(bulk_action=action)}
    services.review_bulk_undo(bulk_action=action)
    assert _exact(project)["active"] == action.count

    # Lowering the overlap settles the items with one review.
    services.review_settings_update(
        project=project, reasons=["Unhelpful"], overlap=1, lease_seconds=60, order="plain"
    )
    assert _exact(project)["done"] >= 3

    # A verdict arriving later excludes an open item; expired leases return theirs.
    open_item = ReviewItem.objects.filter(state=ItemState.OPEN).first()
    CompletionVerdictFactory(completion=open_item.completion, state="filtered")
    services.review_queue_sync(project=project, force=True)
    assert _exact(project)["excluded"] == 2
    services.review_claim_next(project=project, reviewer=bob)
    ReviewLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    ReviewItem.objects.filter(state=ItemState.LEASED).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    services.review_claim_next(project=project, reviewer=rita)
    _exact(project)
    sam = _reviewer(project.org, "sam")
    for who in (bob, rita, sam):
        while _decide_or_none(project, who):
            _exact(project)
    assert _exact(project)["active"] == 0


def _decide_or_none(project, who):
    c = services.review_claim_next(project=project, reviewer=who)
    if c is None:
        return None
    services.review_decide(completion=c, reviewer=who, decision="approve")
    return c


def test_new_completions_count_as_remaining_without_a_forced_sync(project, bob, make_completions):
    make_completions(project, 2)
    teacher = TeacherFactory(project=project)
    job = GenerationJobFactory(teacher=teacher, project=project)
    *_new, filtered = make_completions(project, 4, job=job, sync=False)
    CompletionVerdictFactory(completion=filtered, state="filtered")
    ReviewQueueState.objects.filter(project=project).update(
        synced_at=timezone.now() - timedelta(hours=1)
    )
    services.review_queue_sync(project=project)  # not forced: no recount
    assert ReviewTally.objects.filter(project=project).count() == 1
    progress = review_progress(project=project)
    assert (progress["remaining"], progress["excluded"]) == (5, 1)
    _exact(project)


def test_counts_are_exact_at_once_after_items_are_deleted_with_their_prompt_set(
    project, bob, make_completions
):
    first = make_completions(project, 3)
    make_completions(project, 3)
    _decide(project, bob)
    _decide(project, bob)
    before = _exact(project)
    assert before["done"] == 2 and before["active"] == 4
    gone = ReviewItem.objects.filter(project=project, completion__job=first[0].job).values_list(
        "state", flat=True
    )
    gone_done = sum(1 for state in gone if state == ItemState.DONE)
    prompt_set_delete(prompt_set=first[0].job.prompt_set)
    # No sync: the review app's after_prompt_set_delete callback recounted in the delete.
    counts = _exact(project)
    assert counts["done"] == 2 - gone_done and counts["active"] + counts["done"] == 3
    assert ReviewTally.objects.filter(project=project).count() == 1
    services.review_queue_sync(project=project, force=True)
    assert _exact(project) == counts


def test_reviewers_write_only_their_own_tally_rows(project, bob, make_completions):
    rita = _reviewer(project.org, "rita")
    make_completions(project, 4)
    _decide(project, bob)
    _decide(project, rita)
    _decide(project, rita)
    rows = dict(ReviewTally.objects.filter(project=project).values_list("writer", "done"))
    assert rows == {0: 0, bob.pk: 1, rita.pk: 2}


def test_an_undone_item_is_claimed_next_before_the_prefetched_one(project, bob, make_completions):
    _set(project, order="plain")
    make_completions(project, 4)
    a = services.review_claim_next(project=project, reviewer=bob)
    b = services.review_claim_next(project=project, reviewer=bob, exclude_ids=[a.pk])  # prefetch
    services.review_decide(completion=a, reviewer=bob, decision="approve")
    assert services.review_claim_next(project=project, reviewer=bob, prefer_id=b.pk) == b
    c = services.review_claim_next(project=project, reviewer=bob, exclude_ids=[b.pk])
    assert c not in (a, b)

    assert services.review_undo(project=project, reviewer=bob) == a
    # A reload, the API's next and the page's claim all return the undone item first.
    assert services.review_claim_next(project=project, reviewer=bob) == a
    assert services.review_claim_next(project=project, reviewer=bob) == a
    services.review_decide(completion=a, reviewer=bob, decision="reject", reason="Unhelpful")
    assert services.review_claim_next(project=project, reviewer=bob) == b


def test_the_undo_page_flow_shows_the_undone_item_and_reloads_keep_it(
    project, bob, make_completions
):
    _set(project, order="plain")
    make_completions(project, 3)
    client = login(bob)
    html = client.get(reverse("review_queue", args=[project.pk])).content.decode()
    first = int(re.search(r'data-completion-id="(\d+)"', html).group(1))
    client.post(reverse("review_prefetch", args=[project.pk]), {"exclude": first}, **HX)
    client.post(reverse("review_decide", args=[project.pk, first]), {"decision": "approve"}, **HX)
    client.post(reverse("review_undo", args=[project.pk]))  # the no-JS form: a redirect
    html = client.get(reverse("review_queue", args=[project.pk])).content.decode()
    assert f'data-completion-id="{first}"' in html


def _has_undo(html: str) -> bool:
    return 'data-key="u"' in html


def test_undo_is_offered_only_when_there_is_a_decision_to_undo(project, bob, make_completions):
    make_completions(project, 2)
    client = login(bob)
    queue = reverse("review_queue", args=[project.pk])
    html = client.get(queue).content.decode()
    assert 'id="review-current"' in html and not _has_undo(html)
    assert not review_can_undo(project=project, reviewer=bob)

    current = int(re.search(r'data-completion-id="(\d+)"', html).group(1))
    body = client.post(
        reverse("review_decide", args=[project.pk, current]), {"decision": "approve"}, **HX
    ).content.decode()
    assert _has_undo(body)
    body = client.post(reverse("review_undo", args=[project.pk]), **HX).content.decode()
    assert f'data-completion-id="{current}"' in body and not _has_undo(body)


def test_the_empty_queue_offers_undo_only_to_a_reviewer_with_a_decision(
    project, bob, make_completions
):
    rita = _reviewer(project.org, "rita")
    (only,) = make_completions(project, 1)
    _decide(project, bob)
    html = login(rita).get(reverse("review_queue", args=[project.pk])).content.decode()
    assert 'id="review-empty"' in html and not _has_undo(html)
    html = login(bob).get(reverse("review_queue", args=[project.pk])).content.decode()
    assert 'id="review-empty"' in html and _has_undo(html)
    assert only.pk


def _progress(html: str) -> tuple[int, int, int]:
    done = int(re.search(r'id="progress-done">(\d+)<', html).group(1))
    remaining = int(re.search(r'id="progress-remaining">(\d+)<', html).group(1))
    mine = int(re.search(r'id="progress-mine-done">(\d+)<', html).group(1))
    return done, remaining, mine


def test_the_queue_shows_exact_counts_after_each_decision_undo_and_bulk_action(
    project, bob, alice, make_completions
):
    make_completions(project, 8)
    client = login(bob)
    queue = reverse("review_queue", args=[project.pk])
    html = client.get(queue).content.decode()
    assert _progress(html) == (0, 8, 0)
    for n in range(1, 6):
        current = int(re.search(r'data-completion-id="(\d+)"', html).group(1))
        html = client.post(
            reverse("review_decide", args=[project.pk, current]), {"decision": "approve"}, **HX
        ).content.decode()
        assert _progress(html) == (n, 8 - n, n)
    html = client.post(reverse("review_undo", args=[project.pk]), **HX).content.decode()
    assert _progress(html) == (4, 4, 4)

    login(alice).post(
        reverse("review_bulk", args=[project.pk]), {"decision": "approve", "expected_count": 4}
    )
    assert _progress(client.get(queue).content.decode()) == (8, 0, 4)
    assert review_progress(project=project)["approved"] == 8


@pytest.mark.parametrize("k", [1, 2])
def test_progress_of_the_project_page_matches_the_items(project, alice, bob, k, make_completions):
    _set(project, overlap=k)
    make_completions(project, 3)
    _decide(project, bob)
    body = login(alice).get(reverse("project_detail", args=[project.pk])).content.decode()
    counts = _exact(project)
    assert f"<strong>{counts['done']}</strong>done" in body.replace("\n", "").replace(" ", "")
