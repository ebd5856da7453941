from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """12 s, 3 min 4 s, 2 h 5 min."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


@register.filter
def rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}/s" if value >= 1 else f"{value * 60:.1f}/min"
