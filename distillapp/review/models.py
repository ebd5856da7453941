"""Human review: per-completion queue state, leases, decisions, undo log, bulk actions, best picks.

`ReviewItem` is a denormalised row per reviewable completion so a claim walks a small partial index
(project, priority, id) WHERE state = 'open' instead of scanning completions, verdicts and reviews.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from distillapp.generation.models import Completion, GenerationJob
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt


class Decision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"
    EDIT = "edit", "Edit"
    SKIP = "skip", "Skip"


class FinalDecision(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"


class ItemState(models.TextChoices):
    OPEN = "open", "Open"  # needs more reviews and has a free slot
    LEASED = "leased", "Leased"  # every free slot is leased (or reviewed) right now
    DONE = "done", "Done"  # final decision known
    ADJUDICATION = "adjudication", "Needs adjudication"  # reviewers disagree; an admin decides
    EXCLUDED = "excluded", "Excluded"  # filtered out after it was queued


class ReviewItem(models.Model):
    completion = models.OneToOneField(
        Completion, on_delete=models.CASCADE, related_name="review_item"
    )
    # No index of their own: (project, state) and (job, prompt) below lead with them, and every
    # claim and decision updates the row outside HOT, so each index costs an insert per write.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    job = models.ForeignKey(
        GenerationJob, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=16, choices=ItemState.choices, default=ItemState.OPEN)
    # Lower is reviewed first in "uncertain first" order (negated uncertainty).
    priority = models.FloatField(default=0.0)
    reviews_count = models.PositiveIntegerField(default=0)  # non-skip reviews
    lease_expires_at = models.DateTimeField(
        null=True, blank=True
    )  # latest active lease when LEASED
    decision = models.CharField(max_length=8, choices=FinalDecision.choices, null=True, blank=True)
    target_text = models.TextField(
        null=True, blank=True
    )  # edited text that replaces the completion
    bulk_action = models.ForeignKey(
        "BulkAction", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    adjudicated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["project", "priority", "id"],
                name="reviewitem_open_priority",
                condition=models.Q(state="open"),
            ),
            models.Index(
                fields=["project", "id"],
                name="reviewitem_open_plain",
                condition=models.Q(state="open"),
            ),
            models.Index(
                fields=["project", "lease_expires_at"],
                name="reviewitem_leased_expiry",
                condition=models.Q(state="leased"),
            ),
            models.Index(fields=["project", "state"], name="reviewitem_project_state"),
            models.Index(fields=["job", "prompt"], name="reviewitem_job_prompt"),
        ]


class ReviewLease(models.Model):
    completion = models.ForeignKey(
        Completion, on_delete=models.CASCADE, related_name="review_leases"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_leases"
    )
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["completion", "reviewer"], name="reviewlease_unique_completion_reviewer"
            )
        ]
        indexes = [
            models.Index(fields=["reviewer", "project", "expires_at"], name="reviewlease_reviewer")
        ]


class Review(models.Model):
    completion = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="reviews")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews"
    )
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reason = models.CharField(max_length=200, blank=True, default="")
    edited_text = models.TextField(null=True, blank=True)
    # The completion's text at decision time; the Completion itself is never rewritten.
    original_text = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["completion", "reviewer"], name="review_unique_completion_reviewer"
            )
        ]
        indexes = [
            models.Index(
                fields=["project", "reviewer", "updated_at"], name="review_project_reviewer"
            )
        ]


class ReviewAction(models.Model):
    """Undo log: one row per decision; `previous` is the reviewer's earlier review of it (or null)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    completion = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    previous = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["project", "reviewer", "undone_at", "id"], name="reviewaction_undo"
            )
        ]


class BulkAction(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    decision = models.CharField(max_length=8, choices=FinalDecision.choices)
    reason = models.CharField(max_length=200, blank=True, default="")
    filters = models.JSONField(default=dict)
    # [[review item id, previous state], ...] so the whole action can be undone.
    items = models.JSONField(default=list)
    count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]


class BestPick(models.Model):
    """The best of several samples of one prompt in one job; only it counts for the dataset."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="+")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    completion = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    picked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "prompt"], name="bestpick_unique_job_prompt")
        ]


class ReviewQueueState(models.Model):
    """When the project's queue was last synchronised with completions and filter verdicts."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="+")
    synced_at = models.DateTimeField(null=True, blank=True)


class ReviewTally(models.Model):
    """Project-wide item counts by bucket, kept as deltas: each writer (a reviewer's or admin's user
    id; 0 for queue sync and settings) adds its changes to its own row, in the statement or
    transaction that changes the items, and progress sums the project's rows. Reviewers write only
    their own rows, so they never wait for each other here, and the sum is exact after every
    decision, undo and bulk action without counting the items (~300 ms at a million).

    Buckets: `active` (open or leased), `done`, `adjudication`, `excluded`; `approved` counts the
    done items whose decision is approve. A forced queue sync recounts them (`tally_rebuild`)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    writer = models.BigIntegerField()
    active = models.BigIntegerField(default=0)
    done = models.BigIntegerField(default=0)
    adjudication = models.BigIntegerField(default=0)
    excluded = models.BigIntegerField(default=0)
    approved = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "writer"], name="reviewtally_project_writer")
        ]
