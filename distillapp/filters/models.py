from __future__ import annotations

from django.conf import settings
from django.db import models

from distillapp.core.runs.models import Run
from distillapp.core.runs.models import RunStatus as CoreRunStatus
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
    # Why the judge gave no score (a failed call, or a reply that is not the JSON asked for) and,
    # for an unreadable reply, the start of what it said. Never a score, never a filter.
    judge_error = models.TextField(blank=True, default="")
    judge_reply = models.TextField(blank=True, default="")
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


# One status vocabulary for every run (distillapp.core.runs).
RunStatus = CoreRunStatus


class FilterRun(Run):
    """One pass of the filters over a job's completions or the whole project; progress for the UI."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="filter_runs")
    job = models.ForeignKey(
        "generation.GenerationJob",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="filter_runs",
    )
    trigger = models.CharField(max_length=16, default="manual")  # manual | job_finished
    counts = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "status"], name="filterrun_project_status")]

    @property
    def scope_label(self) -> str:
        return f"job #{self.job_id}" if self.job_id else "whole project"
