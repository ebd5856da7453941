"""Number formats of the eval pages and report: rates as percentages, undefined as a dash."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()
DASH = "—"


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


@register.filter
def pct(value: Any, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f} %" if _is_num(value) else DASH


@register.filter
def num(value: Any, digits: int = 2) -> str:
    return f"{value:,.{digits}f}" if _is_num(value) else DASH


@register.filter
def signed_pct(value: Any) -> str:
    return f"{value * 100:+.1f}" if _is_num(value) else DASH


@register.filter
def get(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None
