"""Per-project review settings, read from `Project.settings["review"]` with defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

DEFAULT_REASONS = [
    "Factually wrong",
    "Unhelpful",
    "Unsafe",
    "Wrong format",
    "Too long",
    "Off-topic",
]
ORDERS = ("uncertain", "plain")
MAX_REASONS = 9  # keys 1–9 pick a reason
MAX_OVERLAP = 10


@dataclass(frozen=True)
class ReviewSettings:
    reasons: list[str] = field(default_factory=lambda: list(DEFAULT_REASONS))
    overlap: int = 1
    lease_seconds: int = 600
    order: str = "uncertain"
    judge_threshold: float = 7.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "reasons": list(self.reasons),
            "overlap": self.overlap,
            "lease_seconds": self.lease_seconds,
            "order": self.order,
        }


def review_settings(project: Any) -> ReviewSettings:
    from distillapp.filters.selectors import filter_config_for_project

    raw = (project.settings or {}).get("review") or {}
    # The filter config is validated when saved, so its threshold is always a number.
    threshold = float(filter_config_for_project(project=project).judge_threshold)
    reasons = [str(r) for r in raw.get("reasons") or DEFAULT_REASONS if str(r).strip()][
        :MAX_REASONS
    ]
    raw_order = raw.get("order")
    order = raw_order if isinstance(raw_order, str) and raw_order in ORDERS else "uncertain"
    return ReviewSettings(
        reasons=reasons or list(DEFAULT_REASONS),
        overlap=max(1, min(MAX_OVERLAP, int(raw.get("overlap") or 1))),
        lease_seconds=max(10, int(raw.get("lease_seconds") or settings.REVIEW_LEASE_SECONDS)),
        order=order,
        judge_threshold=threshold,
    )
