"""The per-completion filters of a run (heuristics on one completion and its prompt), and the
batch reads they need."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection

from distillapp.filters import config as C
from distillapp.filters import heuristics
from distillapp.filters.config import FilterConfig
from distillapp.filters.services.outcomes import Outcome


@dataclass(frozen=True)
class Prompt:
    text: str
    reference: str | None
    metadata: Any


NO_PROMPT = Prompt("", None, {})


class Checks:
    """The per-completion filters of one run, with the configuration read once (not per row)."""

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        on = config.is_enabled
        self.empty, self.truncated, self.length = on(C.EMPTY), on(C.TRUNCATED), on(C.LENGTH)
        self.refusal, self.repetition, self.echo = on(C.REFUSAL), on(C.REPETITION), on(C.ECHO)
        self.reference = on(C.REFERENCE)
        self.phrases = tuple(config.refusal_phrases)

    @property
    def needs_prompts(self) -> bool:
        return self.echo or self.reference

    def run(self, text: str, finish_reason: str, prompt: Prompt) -> Outcome | None:
        """The failures of one completion, or None when it passed every check."""
        failures: list[tuple[str, str]] = []
        empty = heuristics.check_empty(text)
        if self.empty and empty:
            failures.append((C.EMPTY, empty))
        if self.truncated and (reason := heuristics.check_truncated(finish_reason)):
            failures.append((C.TRUNCATED, reason))
        if not empty:
            # Nothing else can be judged about an empty text (its length check says the same).
            failures.extend(self._text_checks(text, prompt))
        if not failures:
            return None
        out = Outcome()
        for name, reason in failures:
            out.fail(name, reason)
        return out

    def _text_checks(self, text: str, prompt: Prompt) -> Iterator[tuple[str, str]]:
        config = self.config
        if self.length and (
            reason := heuristics.check_length(
                text, min_chars=config.min_chars, max_chars=config.max_chars
            )
        ):
            yield C.LENGTH, reason
        if self.refusal and (reason := heuristics.check_refusal(text, phrases=self.phrases)):
            yield C.REFUSAL, reason
        if self.repetition and (
            reason := heuristics.check_repetition(
                text, n=config.repetition_n, threshold=config.repetition_threshold
            )
        ):
            yield C.REPETITION, reason
        if self.echo and (
            reason := heuristics.check_echo(
                text, prompt=prompt.text, threshold=config.echo_threshold
            )
        ):
            yield C.ECHO, reason
        reference = prompt.reference
        if self.reference and reference is not None and reference.strip():
            metadata = prompt.metadata
            mode = metadata.get("reference_mode") if isinstance(metadata, dict) else None
            mode = mode if mode in C.REFERENCE_MODES else config.reference_mode
            if reason := heuristics.check_reference(text, reference=reference, mode=mode):
                yield C.REFERENCE, reason


def prompts_of(rows: list[tuple[Any, ...]], checks: Checks) -> dict[int, Prompt]:
    """The prompts of a batch, read once each (a prompt's samples share them), only when a check
    needs them."""
    if not checks.needs_prompts:
        return {}
    from distillapp.prompts.models import Prompt as PromptRow

    ids = sorted({r[1] for r in rows})
    fields = ("id", "text", "reference", "metadata") if checks.reference else ("id", "text")
    out = {}
    for row in rows_by_id(PromptRow, fields, ids):
        metadata = row[3] if checks.reference else {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        out[row[0]] = Prompt(row[1] or "", row[2] if checks.reference else None, metadata)
    return out


def rows_by_id(model: Any, fields: tuple[str, ...], ids: list[int]) -> list[tuple[Any, ...]]:
    """`fields` (columns; the first is "id") of the rows with these ids. On PostgreSQL one array
    parameter (`= ANY`), not a thousand placeholders for the client to bind."""
    if connection.vendor != "postgresql":
        return list(model.objects.filter(id__in=ids).values_list(*fields))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(fields)} FROM {model._meta.db_table} WHERE id = ANY(%s)", [ids]
        )
        return cursor.fetchall()
