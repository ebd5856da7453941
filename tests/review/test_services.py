from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from distillapp.accounts.models import Role
from distillapp.generation.models import CompletionStatus
from distillapp.prompts.models import Split
from distillapp.review import services
from distillapp.review.models import (
    BulkAction,
    ItemState,
    Review,
    ReviewAction,
    ReviewItem,
    ReviewLease,
)
from distillapp.review.selectors import approved_examples, review_agreement, review_progress
from tests.factories import CompletionVerdictFactory, MembershipFactory, UserFactory


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


def test_sync_queues_ok_completions_without_verdicts_or_that_passed(project, make_completions):
    ok, failed, passed, filtered, pending, restored = make_completions(project, 6, sync=False)
    failed.status = CompletionStatus.FAILED
    failed.save()
    CompletionVerdictFactory(completion=passed, state="passed", flags=[])
    CompletionVerdictFactory(completion=filtered, state="filtered")
    CompletionVerdictFactory(completion=pending, state="pending", flags=[])
    CompletionVerdictFactory(completion=restored, state="restored")

    services.review_queue_sync(project=project, force=True)

    open_ids = set(
        ReviewItem.objects.filter(state=ItemState.OPEN).values_list("completion_id", flat=True)
    )
    assert open_ids == {ok.pk, passed.pk, restored.pk}
    assert not ReviewItem.objects.filter(completion=failed).exists()
    assert services.review_queue_sync(project=project, force=True) == 0  # idempotent


def test_a_claim_leases_one_item_and_a_reload_returns_the_same_one(project, bob, make_completions):
    make_completions(project, 3)
    first = services.review_claim_next(project=project, reviewer=bob)
    again = services.review_claim_next(project=project, reviewer=bob)
    assert first is not None and again.pk == first.pk
    assert ReviewLease.objects.filter(reviewer=bob).count() == 1
    assert ReviewItem.objects.get(completion=first).state == ItemState.LEASED


def test_two_reviewers_get_different_items_and_none_is_left_after_that(
    project, bob, adam, make_completions
):
    make_completions(project, 2)
    a = services.review_claim_next(project=project, reviewer=bob)
    b = services.review_claim_next(project=project, reviewer=adam)
    assert a.pk != b.pk
    carol = _reviewer(project.org, "carol")
    assert services.review_claim_next(project=project, reviewer=carol) is None


def test_an_expired_lease_returns_the_item_to_the_queue(project, bob, adam, make_completions):
    make_completions(project, 1)
    mine = services.review_claim_next(project=project, reviewer=bob)
    assert services.review_claim_next(project=project, reviewer=adam) is None
    ReviewLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    ReviewItem.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    theirs = services.review_claim_next(project=project, reviewer=adam)
    assert theirs.pk == mine.pk
    with pytest.raises(ValidationError, match="lease"):
        services.review_decide(completion=mine, reviewer=bob, decision="approve")


def test_overlap_k_hands_an_item_to_k_different_reviewers_only(
    project, bob, adam, make_completions
):
    _set(project, overlap=2)
    (only,) = make_completions(project, 1)
    carol = _reviewer(project.org, "carol")
    assert services.review_claim_next(project=project, reviewer=bob).pk == only.pk
    assert services.review_claim_next(project=project, reviewer=adam).pk == only.pk
    assert services.review_claim_next(project=project, reviewer=carol) is None
    services.review_decide(completion=only, reviewer=bob, decision="approve")
    # bob never gets it again; the item still waits for adam's review
    assert services.review_claim_next(project=project, reviewer=bob) is None
    assert ReviewItem.objects.get(completion=only).state == ItemState.LEASED
    services.review_decide(completion=only, reviewer=adam, decision="edit", edited_text="Better.")
    item = ReviewItem.objects.get(completion=only)
    assert (item.state, item.decision, item.target_text) == (ItemState.DONE, "approve", "Better.")


def test_disagreeing_reviewers_send_the_item_to_adjudication(
    project, bob, adam, alice, make_completions
):
    _set(project, overlap=2)
    (only,) = make_completions(project, 1)
    services.review_claim_next(project=project, reviewer=bob)
    services.review_claim_next(project=project, reviewer=adam)
    services.review_decide(completion=only, reviewer=bob, decision="approve")
    services.review_decide(completion=only, reviewer=adam, decision="reject", reason="Unhelpful")
    assert ReviewItem.objects.get(completion=only).state == ItemState.ADJUDICATION

    services.review_adjudicate(completion=only, admin=alice, decision="reject")
    item = ReviewItem.objects.get(completion=only)
    assert (item.state, item.decision, item.adjudicated_by) == (ItemState.DONE, "reject", alice)
    assert review_agreement(project=project)["method"] == "cohen"


def test_adjudication_is_refused_for_items_without_disagreement(project, alice, make_completions):
    (only,) = make_completions(project, 1)
    with pytest.raises(ValidationError):
        services.review_adjudicate(completion=only, admin=alice, decision="approve")


def test_a_repeated_submit_updates_the_one_review(project, bob, make_completions):
    make_completions(project, 1)
    c = services.review_claim_next(project=project, reviewer=bob)
    services.review_decide(completion=c, reviewer=bob, decision="approve", duration_ms=1200)
    services.review_decide(completion=c, reviewer=bob, decision="approve", duration_ms=1200)
    assert Review.objects.filter(completion=c, reviewer=bob).count() == 1
    assert ReviewAction.objects.filter(reviewer=bob).count() == 1
    services.review_decide(completion=c, reviewer=bob, decision="reject", reason="Too long")
    review = Review.objects.get(completion=c, reviewer=bob)
    assert (review.decision, review.reason, review.duration_ms) == ("reject", "Too long", 1200)
    assert ReviewItem.objects.get(completion=c).decision == "reject"


def test_decide_needs_a_lease_a_listed_reason_and_edit_text(project, bob, adam, make_completions):
    make_completions(project, 2)
    c = services.review_claim_next(project=project, reviewer=bob)
    with pytest.raises(ValidationError):
        services.review_decide(completion=c, reviewer=adam, decision="approve")  # not adam's lease
    with pytest.raises(ValidationError, match="reason"):
        services.review_decide(completion=c, reviewer=bob, decision="reject", reason="Because")
    with pytest.raises(ValidationError, match="corrected"):
        services.review_decide(completion=c, reviewer=bob, decision="edit", edited_text="  ")
    with pytest.raises(ValidationError):
        services.review_decide(completion=c, reviewer=bob, decision="maybe")
    assert not Review.objects.exists()


def test_an_edit_keeps_the_original_text_and_becomes_the_training_target(
    project, bob, make_completions
):
    make_completions(project, 1)
    c = services.review_claim_next(project=project, reviewer=bob)
    original = c.text
    review = services.review_decide(
        completion=c, reviewer=bob, decision="edit", edited_text="Fixed answer."
    )
    c.refresh_from_db()
    assert c.text == original and review.original_text == original
    [(prompt, completion, target, source)] = list(approved_examples(project=project))
    assert (completion.pk, target, source) == (c.pk, "Fixed answer.", "edited")


def test_undo_reverts_the_last_decision_and_leases_the_item_back(project, bob, make_completions):
    make_completions(project, 2)
    first = services.review_claim_next(project=project, reviewer=bob)
    services.review_decide(completion=first, reviewer=bob, decision="reject", reason="Unsafe")
    second = services.review_claim_next(project=project, reviewer=bob)
    assert second.pk != first.pk

    back = services.review_undo(project=project, reviewer=bob)
    assert back.pk == first.pk
    assert not Review.objects.filter(completion=first).exists()
    assert ReviewItem.objects.get(completion=first).state == ItemState.LEASED
    assert ReviewLease.objects.filter(completion=first, reviewer=bob).exists()
    # decide again, then undo restores the earlier decision of a changed review
    services.review_decide(completion=first, reviewer=bob, decision="approve")
    services.review_decide(completion=first, reviewer=bob, decision="reject", reason="Off-topic")
    services.review_undo(project=project, reviewer=bob)
    assert Review.objects.get(completion=first, reviewer=bob).decision == "approve"
    services.review_undo(project=project, reviewer=bob)
    with pytest.raises(ValidationError, match="Nothing to undo"):
        services.review_undo(project=project, reviewer=bob)


def test_a_skip_returns_the_item_to_others_but_not_to_the_skipper(
    project, bob, adam, make_completions
):
    (only,) = make_completions(project, 1)
    services.review_claim_next(project=project, reviewer=bob)
    services.review_decide(completion=only, reviewer=bob, decision="skip")
    assert services.review_claim_next(project=project, reviewer=bob) is None
    assert services.review_claim_next(project=project, reviewer=adam).pk == only.pk


def test_uncertain_order_puts_judge_scores_near_the_threshold_first(project, bob, make_completions):
    sure, borderline, plain = make_completions(project, 3, sync=False)
    CompletionVerdictFactory(completion=sure, state="passed", flags=[], judge_score=10)
    CompletionVerdictFactory(completion=borderline, state="passed", flags=[], judge_score=7)
    services.review_queue_sync(project=project, force=True)
    assert services.review_claim_next(project=project, reviewer=bob).pk == borderline.pk

    _set(project, order="plain")
    services.review_release(completion=borderline, reviewer=bob)
    assert services.review_claim_next(project=project, reviewer=bob).pk == sure.pk


def test_bulk_approve_matches_the_filter_and_undoes_as_a_whole(
    project, alice, bob, make_completions
):
    high, high_flagged, low, none = make_completions(project, 4, sync=False)
    CompletionVerdictFactory(completion=high, state="passed", flags=[], judge_score=9)
    CompletionVerdictFactory(
        completion=high_flagged, state="restored", flags=["too_long"], judge_score=9
    )
    CompletionVerdictFactory(completion=low, state="passed", flags=[], judge_score=4)
    services.review_queue_sync(project=project, force=True)
    assert services.bulk_candidates(project=project, min_judge=8, no_flags=True).count() == 1
    assert services.bulk_candidates(project=project, min_judge=8).count() == 2

    with pytest.raises(ValidationError, match="changed"):
        services.review_bulk_apply(
            project=project, actor=alice, decision="approve", min_judge=8, expected_count=5
        )
    action = services.review_bulk_apply(
        project=project,
        actor=alice,
        decision="approve",
        min_judge=8,
        no_flags=True,
        expected_count=1,
    )
    assert action.count == 1 and action.items == [
        [ReviewItem.objects.get(completion=high).pk, "open"]
    ]
    assert ReviewItem.objects.get(completion=high).decision == "approve"
    assert [c.pk for _p, c, _t, s in approved_examples(project=project)] == [high.pk]

    assert services.review_bulk_undo(bulk_action=action) == 1
    assert services.review_bulk_undo(bulk_action=action) == 0
    item = ReviewItem.objects.get(completion=high)
    assert (item.state, item.decision, item.bulk_action_id) == (ItemState.OPEN, None, None)
    assert BulkAction.objects.get().undone_at is not None
    assert list(approved_examples(project=project)) == []


def test_bulk_reject_needs_a_reason_from_the_list(project, alice, make_completions):
    make_completions(project, 1)
    with pytest.raises(ValidationError):
        services.review_bulk_apply(project=project, actor=alice, decision="reject", reason="nope")


def test_best_pick_makes_only_that_sample_count_for_its_prompt(
    project, bob, adam, make_completions
):
    a, b = make_completions(project, 1, samples=2)
    for c in (a, b):
        who = bob if c is a else adam
        got = services.review_claim_next(project=project, reviewer=who)
        services.review_decide(completion=got, reviewer=who, decision="approve")
    assert {c.pk for _p, c, _t, _s in approved_examples(project=project)} == {a.pk, b.pk}
    services.review_pick_best(completion=b, user=bob)
    assert [c.pk for _p, c, _t, _s in approved_examples(project=project)] == [b.pk]
    services.review_pick_best(completion=a, user=bob)  # replaces the earlier pick
    assert [c.pk for _p, c, _t, _s in approved_examples(project=project)] == [a.pk]


def test_approved_examples_never_include_held_out_prompts(project, bob, make_completions):
    (c,) = make_completions(project, 1)
    got = services.review_claim_next(project=project, reviewer=bob)
    services.review_decide(completion=got, reviewer=bob, decision="approve")
    c.prompt.split = Split.HELDOUT
    c.prompt.save()
    assert list(approved_examples(project=project)) == []


def test_progress_counts_done_and_remaining_for_the_project_and_the_reviewer(
    project, bob, make_completions
):
    make_completions(project, 3)
    c = services.review_claim_next(project=project, reviewer=bob)
    services.review_decide(completion=c, reviewer=bob, decision="approve")
    progress = review_progress(project=project, reviewer=bob)
    assert (progress["done"], progress["remaining"], progress["mine"]) == (
        1,
        2,
        {"done": 1, "remaining": 2},
    )


def test_settings_are_validated_and_lowering_overlap_settles_items(
    project, bob, adam, make_completions
):
    with pytest.raises(ValidationError) as exc:
        services.review_settings_update(
            project=project, reasons=[], overlap=0, lease_seconds=1, order="random"
        )
    assert set(exc.value.message_dict) == {"reasons", "overlap", "lease_seconds", "order"}
    _set(project, overlap=2)
    (only,) = make_completions(project, 1)
    services.review_claim_next(project=project, reviewer=bob)
    services.review_decide(completion=only, reviewer=bob, decision="approve")
    services.review_settings_update(
        project=project, reasons=["Bad"], overlap=1, lease_seconds=60, order="plain"
    )
    assert ReviewItem.objects.get(completion=only).state == ItemState.DONE
    project.refresh_from_db()
    assert project.settings["review"]["reasons"] == ["Bad"]


def test_undo_past_an_item_an_admin_settled_moves_on_to_the_decision_before(
    project, alice, bob, make_completions
):
    make_completions(project, 2)
    first = services.review_claim_next(project=project, reviewer=bob)
    services.review_decide(completion=first, reviewer=bob, decision="approve")
    second = services.review_claim_next(project=project, reviewer=bob)
    services.review_decide(completion=second, reviewer=bob, decision="reject", reason="Unsafe")
    ReviewItem.objects.filter(completion=second).update(adjudicated_by=alice)

    with pytest.raises(ValidationError, match="settled"):
        services.review_undo(project=project, reviewer=bob)
    assert Review.objects.get(completion=second, reviewer=bob).decision == "reject"
    back = services.review_undo(project=project, reviewer=bob)  # not the same error again
    assert back.pk == first.pk
    assert not Review.objects.filter(completion=first, reviewer=bob).exists()
