"""Writes of the review queue: sync, claim, decide, undo, adjudicate, best pick, bulk actions,
settings. Views, the API, tasks and tests call these names; the modules are an implementation
detail.

Concurrency: every change to an item's reviews or leases happens while its `ReviewItem` row is
locked, so "never more than k active leases + reviews" is checked under the lock. Claims lock
candidates with SKIP LOCKED on PostgreSQL, so concurrent reviewers pass each other by instead of
queueing on the same row. On SQLite the writer lock serialises everything.
"""

from __future__ import annotations

from distillapp.review.services.admin import (
    bulk_candidates,
    review_adjudicate,
    review_bulk_apply,
    review_bulk_undo,
    review_pick_best,
    review_settings_update,
    review_unpick_best,
)
from distillapp.review.services.claim import review_claim_next, review_release
from distillapp.review.services.decide import review_decide, review_undo
from distillapp.review.services.state import ACCEPT
from distillapp.review.services.sync import (
    REVIEWABLE_VERDICT_STATES,
    SYNC_INLINE_LIMIT,
    review_queue_sync,
    reviewable_q,
)

__all__ = [
    "ACCEPT",
    "REVIEWABLE_VERDICT_STATES",
    "SYNC_INLINE_LIMIT",
    "bulk_candidates",
    "review_adjudicate",
    "review_bulk_apply",
    "review_bulk_undo",
    "review_claim_next",
    "review_decide",
    "review_pick_best",
    "review_queue_sync",
    "review_release",
    "review_settings_update",
    "review_undo",
    "review_unpick_best",
    "reviewable_q",
]
