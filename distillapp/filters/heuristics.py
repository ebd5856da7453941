"""Heuristic and reference checks on one completion. Plain functions: text in, reason or None out.

Each check returns None when the completion passes, or a sentence saying why it failed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

from distillapp.filters.dedup import normalise

_APOSTROPHES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'}
)


def check_empty(text: str) -> str | None:
    if not text.strip():
        return "The completion is empty." if not text else "The completion is only whitespace."
    return None


def check_truncated(finish_reason: str) -> str | None:
    if finish_reason == "length":
        return "The teacher stopped at its token limit (finish_reason = length), so the answer is cut off."
    return None


def check_length(text: str, *, min_chars: int, max_chars: int) -> str | None:
    n = len(text.strip())
    if n < min_chars:
        return f"{n} characters, shorter than the minimum of {min_chars}."
    if n > max_chars:
        return f"{n} characters, longer than the maximum of {max_chars}."
    return None


def _fold(text: str) -> str:
    return " ".join(text.translate(_APOSTROPHES).casefold().split())


@lru_cache(maxsize=16)
def _folded_phrases(phrases: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(phrase, folded) pairs, folded once per list instead of once per completion."""
    return tuple((p, _fold(p)) for p in phrases if p)


def check_refusal(text: str, *, phrases: Sequence[str]) -> str | None:
    folded = _fold(text)
    for phrase, folded_phrase in _folded_phrases(tuple(phrases)):
        if folded_phrase in folded:
            return f"Contains the refusal phrase “{phrase}”."
    return None


def _distinct_ngrams(units: Sequence[str], n: int) -> int:
    # zip over shifted views builds the n-gram tuples in C (~3x a comprehension of slices).
    return len(set(zip(*(units[i:] for i in range(n)), strict=False)))


def repeated_ngram_share(text: str, n: int) -> float:
    """Share of n-grams that repeat an earlier one (0 = all distinct, →1 = one loop).

    Units are words; text without spaces between long runs (e.g. Chinese) uses characters.
    Fewer than two n-grams → 0.
    """
    units: Sequence[str] = text.split()
    if units and len(text.strip()) / len(units) > 20:
        units = "".join(units)  # its characters: str.split() drops exactly the isspace() ones
    total = len(units) - n + 1
    if total < 2:
        return 0.0
    return (total - _distinct_ngrams(units, n)) / total


def check_repetition(text: str, *, n: int, threshold: float) -> str | None:
    share = repeated_ngram_share(text, n)
    if share >= threshold:
        return f"{share:.0%} of its {n}-grams are repeats (threshold {threshold:.0%})."
    return None


def check_echo(text: str, *, prompt: str, threshold: float, shingle: int = 5) -> str | None:
    """The completion repeats the prompt: identical, or most of it copied from the prompt.

    Containment (share of the completion's character shingles found in the prompt) is only
    counted when the completion is at least half as long as the prompt, so a short answer quoted
    from a long prompt ("Paris") is not an echo.
    """
    c, (p, ps) = normalise(text), _prompt_shingles(prompt, shingle)
    if not c or not p:
        return None
    if c == p:
        return "The completion repeats the prompt word for word."
    if len(c) * 2 < len(p):
        return None
    cs = _shingle_tuples(c, shingle)
    contained = len(cs & ps) / len(cs) if cs else 0.0
    if contained >= threshold:
        return f"{contained:.0%} of the completion is copied from the prompt (threshold {threshold:.0%})."
    return None


def _shingle_tuples(norm: str, shingle: int) -> set[tuple[str, ...]]:
    """`dedup.shingles` of an already normalised text, as tuples of characters (built in C; the
    same sets up to that one-to-one mapping, so intersections and sizes are the same)."""
    if len(norm) < shingle:
        return {tuple(norm)} if norm else set()
    return set(zip(*(norm[i:] for i in range(shingle)), strict=False))


@lru_cache(maxsize=256)
def _prompt_shingles(prompt: str, shingle: int) -> tuple[str, frozenset[tuple[str, ...]]]:
    """A prompt's normalised text and shingles, once for all its samples."""
    p = normalise(prompt)
    return p, frozenset(_shingle_tuples(p, shingle))


# ---- reference checks -----------------------------------------------------------------------

_ANSWER_MARKERS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*|####\s*", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?")


def normalise_answer(text: str) -> str:
    """NFKC, case-folded, punctuation and LaTeX/Markdown decoration dropped, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).casefold()
    text = re.sub(r"[*_`$\\]", " ", text)
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    words = [w for w in text.split() if w not in {"a", "an", "the"}]
    return " ".join(words)


def final_answer(text: str) -> str:
    """The part of a completion that states the answer: \\boxed{}, after 'answer is'/'####', else the last line."""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1]
    markers = list(_ANSWER_MARKERS.finditer(text))
    if markers:
        rest = text[markers[-1].end() :].strip()
        return rest.splitlines()[0] if rest else ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def parse_number(text: str) -> float | None:
    """A number as people write it: '1,234', '−3', '2.5e3', '3/4', '$12', '45%'. None if absent."""
    text = unicodedata.normalize("NFKC", text).strip()
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    raw = matches[-1].replace(",", "").replace("−", "-").replace(" ", "")
    try:
        value = float(Fraction(raw)) if "/" in raw else float(raw)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def check_reference(text: str, *, reference: str, mode: str) -> str | None:
    ref = reference.strip()
    if mode == "exact":
        if text.strip() == ref:
            return None
        return f"Does not match the reference exactly (expected “{_short(ref)}”)."
    if mode == "numeric":
        expected = parse_number(ref)
        if expected is not None:
            got = parse_number(final_answer(text))
            if got is None:
                got = parse_number(text)
            if got is None:
                return f"No number found; the reference is {_short(ref)}."
            if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
                return None
            return f"Answer {got:g} differs from the reference {expected:g}."
        # A non-numeric reference falls back to the normalised comparison.
    want = normalise_answer(ref)
    if want in (normalise_answer(text), normalise_answer(final_answer(text))):
        return None
    return f"Final answer does not match the reference “{_short(ref)}” (normalised)."


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
