from __future__ import annotations

from django.conf import settings
from django.db import models

from distillapp.core.runs.models import Run
from distillapp.projects.models import Project


def chat_messages(messages: object, text: str) -> list[dict[str, str]]:
    """A stored `messages` value (None for plain text) as a list of {"role", "content"} dicts;
    anything unreadable falls back to the text as one user message."""
    out = [
        {"role": str(m.get("role") or "user"), "content": str(m.get("content", ""))}
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict)
    ]
    return out or [{"role": "user", "content": text}]


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
    """One prompt of a set. `project` repeats the set's project (written by the import).

    The table is written a million rows at a time by the import's COPY, so every per-row cost
    counts: the foreign keys are not checked by the database (a per-row trigger that doubled the
    import time; the import writes the ids of the set it has just created, and deletes cascade
    through Django's collector and `prompt_set_delete`), `messages` is stored only for chats, and
    the duplicate key is a 16-byte UUID rather than 64 hex characters.

    Exact duplicates within a project are kept out by the import, the only writer of prompts: it
    holds the project's import lock and drops every hash the project already has (services). There
    is deliberately no unique index on (project, text_hash): docs/prompts.md says why.
    """

    # Not indexed: a prompt goes when its set goes, and deleting a project deletes its sets (their
    # prompts found through the keyset index below). DO_NOTHING keeps Django's collector from
    # also looking for the project's prompts by this column, a scan of the whole table.
    project = models.ForeignKey(
        Project, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    prompt_set = models.ForeignKey(
        PromptSet,
        on_delete=models.CASCADE,
        related_name="prompts",
        db_index=False,
        db_constraint=False,
    )
    position = models.IntegerField()
    external_id = models.CharField(max_length=255, blank=True, default="")
    # None for a prompt that is one user message (its content is `text`); use `chat` to read.
    messages = models.JSONField(null=True, blank=True)
    text = models.TextField()
    reference = models.TextField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)
    # The first 128 bits of the SHA-256 of the normalised text (parsing.text_hash).
    text_hash = models.UUIDField()

    @property
    def chat(self) -> list[dict[str, str]]:
        """The prompt as chat messages, whether stored as a chat or as plain text."""
        return chat_messages(self.messages, self.text)

    class Meta:
        # Keyset pages walk (prompt_set, id); a split filter is applied on the way. PostgreSQL also
        # has a `search_vector tsvector` column (not a Django field; filled after import by
        # workers.tasks.prompts) with a GIN index, and a GIN index on metadata (migrations 0002
        # to 0004, PostgreSQL only).
        indexes = [models.Index(fields=["prompt_set", "id"], name="prompt_set_id_keyset")]


class SearchIndexRun(Run):
    """Filling a set's full-text search vectors after its import (PostgreSQL): a background run
    with the shared lifecycle, so a worker killed part-way is taken over and goes on from the
    prompts still without a vector."""

    prompt_set = models.OneToOneField(
        PromptSet, on_delete=models.CASCADE, related_name="search_index_run"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
