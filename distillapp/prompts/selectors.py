"""Reads of prompts. Held-out prompts are evaluation data and never leave through the
generation/training selectors, whatever the caller passes."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from distillapp.prompts.models import Prompt, PromptSet, Split


class HeldOutPromptError(Exception):
    """Raised when held-out prompts would reach a teacher or a training set."""


def prompts_for_generation(
    *, prompt_set: PromptSet, q: str | None = None, metadata: dict[str, str] | None = None
) -> QuerySet[Prompt]:
    """Train-split prompts of a set, optionally narrowed; the only way generation gets prompts."""
    qs = Prompt.objects.filter(prompt_set=prompt_set, split=Split.TRAIN)
    if q:
        qs = qs.filter(text__icontains=q)
    for key, value in (metadata or {}).items():
        qs = qs.filter(**{f"metadata__{key}": value})
    return qs.order_by("id")


def ensure_trainable(prompt_ids: Iterable[int]) -> None:
    """Refuse any id that is a held-out prompt (for training sets built from arbitrary ids)."""
    ids = list(prompt_ids)
    leaked = Prompt.objects.filter(pk__in=ids, split=Split.HELDOUT).count()
    if leaked:
        raise HeldOutPromptError(f"{leaked} held-out prompt(s) cannot be used for generation or training.")
