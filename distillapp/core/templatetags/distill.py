from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from distillapp.core.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    """Untrusted Markdown → sanitised HTML (see distillapp.core.markdown)."""
    return render_markdown(text)


@register.filter
def percent(part: int | float, whole: int | float) -> int:
    return int(round(100 * part / whole)) if whole else 0
