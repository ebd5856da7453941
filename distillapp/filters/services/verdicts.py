"""Human overrides of verdicts: restore a filtered completion to review, or undo that."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from distillapp.filters.models import CompletionVerdict, VerdictState


def verdict_restore(*, completion: Any, user: Any) -> CompletionVerdict:
    """A human keeps a filtered-out completion: state → restored; flags and reasons stay."""
    with transaction.atomic():
        verdict = (
            CompletionVerdict.objects.select_for_update().filter(completion=completion).first()
        )
        if verdict is None or verdict.state != VerdictState.FILTERED:
            if verdict is not None and verdict.state == VerdictState.RESTORED:
                return verdict
            raise ValidationError("Only a filtered-out completion can be restored.")
        verdict.state = VerdictState.RESTORED
        verdict.restored_by = user
        verdict.restored_at = timezone.now()
        verdict.save(update_fields=["state", "restored_by", "restored_at", "updated_at"])
    return verdict


def verdict_unrestore(*, completion: Any, user: Any) -> CompletionVerdict:
    """Undo a restore: back to filtered out (the filters' flags still stand)."""
    with transaction.atomic():
        verdict = (
            CompletionVerdict.objects.select_for_update().filter(completion=completion).first()
        )
        if verdict is None or verdict.state != VerdictState.RESTORED:
            if verdict is not None and verdict.state == VerdictState.FILTERED:
                return verdict
            raise ValidationError("Only a restored completion can be filtered out again.")
        verdict.state = VerdictState.FILTERED if verdict.flags else VerdictState.PASSED
        verdict.restored_by = None
        verdict.restored_at = None
        verdict.save(update_fields=["state", "restored_by", "restored_at", "updated_at"])
    return verdict
