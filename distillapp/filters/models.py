from __future__ import annotations

from django.conf import settings
from django.db import models

from distillapp.projects.models import Project


class VerdictState(models.TextChoices):
    PENDING = "pending", "Pending"
    PASSED = "passed", "Passed"
    FILTERED = "filtered", "Filtered out"
    RESTORED = "restored", "Restored"


class CompletionVerdict(models.Model):
    """What the automatic filters decided about one completion (one row per completion).

    `flags` lists the names of the filters that failed; `reasons` maps the name of every failed
    filter, and of the judge whenever it ran (score or error), to a sentence for humans.
    A human restore keeps flags and reasons and only changes `state`.
    """

    completion = models.OneToOneField(
        "generation.Completion", related_name="verdict", on_delete=models.CASCADE
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(
        max_length=16, choices=VerdictState.choices, default=VerdictState.PENDING
    )
    flags = models.JSONField(default=list, blank=True)
    reasons = models.JSONField(default=dict, blank=True)
    judge_score = models.FloatField(null=True, blank=True)
    judge_rationale = models.TextField(blank=True, default="")
    # Which judge (teacher, model, rubric) gave `judge_score`: a re-run with the same judge keeps
    # the score instead of paying for the call again.
    judge_key = models.CharField(max_length=64, blank=True, default="")
    duplicate_of = models.ForeignKey(
        "generation.Completion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)
    restored_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    restored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "state"], name="verdict_project_state"),
            models.Index(fields=["project", "judge_score"], name="verdict_project_judge"),
        ]

    def __str__(self) -> str:
        return f"verdict {self.state} for completion {self.completion_id}"

    @property
    def is_out(self) -> bool:
        return self.state == VerdictState.FILTERED


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class FilterRun(models.Model):
    """One pass of the filters over a job's completions or the whole project; progress for the UI."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="filter_runs")
    job = models.ForeignKey(
        "generation.GenerationJob",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="filter_runs",
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=16, default="manual")  # manual | job_finished
    done = models.IntegerField(default=0)
    total = models.IntegerField(default=0)
    message = models.TextField(blank=True, default="")
    counts = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "status"], name="filterrun_project_status")]

    @property
    def is_active(self) -> bool:
        return self.status in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def scope_label(self) -> str:
        return f"job #{self.job_id}" if self.job_id else "whole project"
