"""The state every background run shares: status, progress, claim and heartbeat.

Generation jobs, filter runs, search indexing (and later dataset builds, training and evaluation)
are concrete models that inherit `Run`, so one set of services (`distillapp.core.runs.services`)
claims, heart-beats, cancels, resumes, finishes and sweeps all of them the same way.
"""

from __future__ import annotations

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING)
ENDED_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
# A worker owns the run while it is in one of these; its heartbeat says it is still alive.
CLAIMED_STATUSES = (RunStatus.RUNNING, RunStatus.CANCELLING)


class Run(models.Model):
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    # Progress for people: items done of total, a sentence, and numbers of the run's own kind.
    done = models.IntegerField(default=0)
    total = models.IntegerField(default=0)
    message = models.TextField(blank=True, default="")
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The worker run that owns the run; every write of a run is conditional on it, so a worker
    # that lost its claim (stale heartbeat, taken over) can no longer write.
    claim_token = models.CharField(max_length=64, blank=True, default="")
    # When its task was last sent: the sweep re-sends a stale run's task at most once a period.
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_ended(self) -> bool:
        return self.status in ENDED_STATUSES

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 1) if self.total else 0.0
