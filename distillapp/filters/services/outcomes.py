"""What a filter run decides about one completion (`Outcome`), the run's counts (`Tally`) and its
progress and heartbeat (`Progress`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from distillapp.core.runs.services import run_progress
from distillapp.filters.models import FilterRun

_PROGRESS_EVERY_S = 1.0


class Progress:
    """Progress and heartbeat of the claimed run, written at most once a second."""

    def __init__(self, run: FilterRun, token: str) -> None:
        self.run = run
        self.token = token
        self.done = 0
        self.total = 0
        self._last = 0.0

    def update(
        self,
        *,
        message: str | None = None,
        done: int | None = None,
        total: int | None = None,
        force: bool = False,
    ) -> None:
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        if message is not None:
            self.run.message = message
        now = time.monotonic()
        if force or now - self._last >= _PROGRESS_EVERY_S:
            self._last = now
            run_progress(
                FilterRun,
                pk=self.run.pk,
                token=self.token,
                done=self.done,
                total=self.total,
                message=self.run.message,
            )


@dataclass
class Outcome:
    flags: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    duplicate_of: int | None = None
    judge_score: float | None = None
    judge_rationale: str = ""
    judge_key: str = ""
    judge_error: str = ""
    judge_reply: str = ""
    awaiting_judge: bool = False

    def fail(self, name: str, reason: str) -> None:
        if name not in self.flags:
            self.flags.append(name)
        self.reasons[name] = reason


@dataclass
class Tally:
    """The run's counts, added up as verdicts are written (no per-completion state)."""

    total: int = 0
    filtered: int = 0
    judge_errors: int = 0
    by_flag: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        if outcome.flags:
            self.filtered += 1
        for name in outcome.flags:
            self.flag(name)
        if outcome.judge_error:
            self.judge_errors += 1

    def flag(self, name: str) -> None:
        self.by_flag[name] = self.by_flag.get(name, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "filtered": self.filtered,
            "passed": self.total - self.filtered,
            "by_flag": self.by_flag,
            "judge_errors": self.judge_errors,
        }
