"""Datasets and their immutable versions.

A version *is* its build run (the shared run lifecycle): queued → running → succeeded. Once it has
succeeded its rows live as files in the artefact store (Parquet, the engine's JSONL and a top-k
shard) and nothing about it changes again: its lineage is copied into the row, never referenced,
so later deletions or edits of jobs, teachers, prompt sets or reviews leave it as it was.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from distillapp.core.runs.models import Run, RunStatus
from distillapp.projects.models import Project


class Dataset(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="dataset_unique_name")
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(Run):
    """One numbered, content-addressed version of a dataset, and the run that builds it."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    # Repeats dataset.project so the access helpers (`get_scoped_object`) and the sweep find it.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    number = models.PositiveIntegerField()
    recipe = models.JSONField(default=dict)
    parent = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children"
    )
    # Written once, by the build that succeeds.
    sha256 = models.CharField(max_length=64, blank=True, default="")
    lineage = models.JSONField(default=dict, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    diff = models.JSONField(default=dict, blank=True)
    # Folder relative to MEDIA_ROOT, and {file name: {"bytes", "sha256"}} of what is in it.
    path = models.CharField(max_length=500, blank=True, default="")
    files = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "number"], name="datasetversion_unique_number"
            )
        ]
        ordering = ["-number"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="dsversion_status_heartbeat")
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    @property
    def is_built(self) -> bool:
        return self.status == RunStatus.SUCCEEDED
