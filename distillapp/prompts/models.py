from __future__ import annotations

from django.conf import settings
from django.db import models

from distillapp.projects.models import Project


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    HELDOUT = "heldout", "Held-out"


class PromptSet(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompt_sets")
    name = models.CharField(max_length=200)
    source_name = models.CharField(max_length=255, blank=True, default="")
    source_format = models.CharField(max_length=16, blank=True, default="")
    sha256 = models.CharField(max_length=64, blank=True, default="")
    size_bytes = models.BigIntegerField(default=0)
    heldout_fraction = models.FloatField(default=0.1)
    seed = models.BigIntegerField(default=0)
    total_count = models.IntegerField(default=0)
    train_count = models.IntegerField(default=0)
    heldout_count = models.IntegerField(default=0)
    duplicates_dropped = models.IntegerField(default=0)
    # Full-text search vectors (PostgreSQL) are filled after the import by a task; until every
    # prompt has one, searches on the set also match the unindexed prompts the slow way.
    search_indexed = models.BooleanField(default=False)
    search_indexed_count = models.IntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    """One prompt. `project` is denormalised so exact duplicates are unique within a project."""

    # Both FKs are covered by the composite indexes below, so they get no index of their own
    # (fewer indexes to maintain while importing millions of rows).
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    prompt_set = models.ForeignKey(
        PromptSet, on_delete=models.CASCADE, related_name="prompts", db_index=False
    )
    position = models.IntegerField()
    external_id = models.CharField(max_length=255, blank=True, default="")
    messages = models.JSONField()
    text = models.TextField()
    reference = models.TextField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)
    text_hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "text_hash"], name="prompt_unique_text_in_project"
            ),
        ]
        # Keyset pages walk (prompt_set, id); a split filter is applied on the way. PostgreSQL also
        # has a `search_vector tsvector` column (not a Django field; filled after import by
        # workers.tasks.prompts) with a GIN index, and a GIN index on metadata (migrations 0002
        # and 0003, PostgreSQL only).
        indexes = [models.Index(fields=["prompt_set", "id"], name="prompt_set_id_keyset")]
