"""Answer shape: length ratio against the teacher and Markdown format statistics."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t]+\S", re.MULTILINE)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+\S", re.MULTILINE)
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)", re.MULTILINE)


@dataclass(frozen=True)
class FormatCounts:
    list_items: int
    headings: int
    code_blocks: int


def format_counts(text: str) -> FormatCounts:
    """List items (`-`, `*`, `+` or `1.`/`1)` at a line start), ATX headings (`#` to `######`)
    and fenced code blocks (pairs of ``` or ~~~ fences; an unclosed one counts)."""
    fences = len(_FENCE.findall(text))
    return FormatCounts(
        list_items=len(_LIST_ITEM.findall(text)),
        headings=len(_HEADING.findall(text)),
        code_blocks=(fences + 1) // 2,
    )


def format_stats(answers: Iterable[str]) -> dict[str, float]:
    """Share of answers with at least one list / heading / code block, and the mean counts."""
    counts = [format_counts(a) for a in answers]
    n = len(counts)
    if not n:
        return {"n": 0}
    return {
        "n": n,
        "with_list": sum(c.list_items > 0 for c in counts) / n,
        "with_heading": sum(c.headings > 0 for c in counts) / n,
        "with_code_block": sum(c.code_blocks > 0 for c in counts) / n,
        "mean_list_items": sum(c.list_items for c in counts) / n,
        "mean_headings": sum(c.headings for c in counts) / n,
        "mean_code_blocks": sum(c.code_blocks for c in counts) / n,
    }


def length_ratio(answers: Sequence[str], teacher_answers: Sequence[str]) -> float:
    """Total characters of the answers over those of the teacher's answers to the same items
    (a ratio of sums, so a few empty teacher answers cannot blow it up); nan if the teacher
    wrote nothing."""
    if len(answers) != len(teacher_answers):
        raise ValueError("answers and teacher answers must be aligned")
    teacher = sum(len(a) for a in teacher_answers)
    return sum(len(a) for a in answers) / teacher if teacher else float("nan")
