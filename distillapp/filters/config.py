"""Filter configuration: `Project.settings["filters"]`, merged over the defaults below.

Only keys that differ from nothing are stored; a missing key takes its default, so new options
reach old projects without a migration.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from django.core.exceptions import ValidationError

# Filter names, in the order they run. These are also the names used in verdict flags.
EMPTY = "empty"
TRUNCATED = "truncated"
LENGTH = "length"
REFUSAL = "refusal"
REPETITION = "repetition"
ECHO = "echo"
REFERENCE = "reference"
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
JUDGE = "judge"

FILTER_NAMES = [
    EMPTY,
    TRUNCATED,
    LENGTH,
    REFUSAL,
    REPETITION,
    ECHO,
    REFERENCE,
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
    JUDGE,
]
FILTER_LABELS = {
    EMPTY: "Empty or whitespace",
    TRUNCATED: "Truncated (hit max tokens)",
    LENGTH: "Outside length bounds",
    REFUSAL: "Refusal phrase",
    REPETITION: "Repetition",
    ECHO: "Echo of the prompt",
    REFERENCE: "Reference mismatch",
    EXACT_DUPLICATE: "Exact duplicate",
    NEAR_DUPLICATE: "Near duplicate",
    JUDGE: "LLM judge below threshold",
}
REFERENCE_MODES = ["exact", "normalised", "numeric"]

DEFAULT_REFUSALS = [
    "I'm sorry, but I can't",
    "I am sorry, but I cannot",
    "I cannot help with",
    "I can't help with",
    "I can't assist with",
    "I cannot assist with",
    "I'm unable to help",
    "I am unable to help",
    "I won't be able to help",
    "As an AI language model",
    "As an AI, I cannot",
]

DEFAULT_RUBRIC = """Score the assistant's answer from 1 (useless or wrong) to 10 (excellent).
Consider correctness, helpfulness, clarity and whether it follows the instructions in the prompt.
A wrong final answer scores at most 3."""


@dataclass
class FilterConfig:
    enabled: list[str] = field(default_factory=lambda: [n for n in FILTER_NAMES if n != JUDGE])
    min_chars: int = 1
    max_chars: int = 32000
    refusal_phrases: list[str] = field(default_factory=lambda: list(DEFAULT_REFUSALS))
    repetition_n: int = 3
    repetition_threshold: float = 0.3
    echo_threshold: float = 0.8
    reference_mode: str = "normalised"
    dedup_threshold: float = 0.8
    # Off: a prompt's own samples are never near-duplicates of each other (several samples per
    # prompt, best one picked later); on: they are compared like any two completions.
    dedup_within_prompt: bool = False
    judge_teacher_id: int | None = None
    judge_rubric: str = DEFAULT_RUBRIC
    judge_threshold: float = 6.0

    def is_enabled(self, name: str) -> bool:
        return name in self.enabled

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def judge_key(self, *, teacher_id: int, model: str, base_url: str) -> str:
        """Identifies the judge that gave a score: the same key means a cached score is valid."""
        raw = f"{teacher_id}\x00{model}\x00{base_url}\x00{self.judge_rubric}"
        return hashlib.sha256(raw.encode()).hexdigest()


FIELD_NAMES = {f.name for f in fields(FilterConfig)}


def config_from_settings(settings: dict[str, Any] | None) -> FilterConfig:
    """The stored config merged over the defaults; unknown or broken values fall back to defaults."""
    stored = (settings or {}).get("filters") or {}
    try:
        return validate_config(stored, partial=True)
    except ValidationError:
        return FilterConfig()


def _as_int(errors: dict[str, list[str]], name: str, value: Any, *, lo: int, hi: int) -> int | None:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        errors.setdefault(name, []).append("Enter a whole number.")
        return None
    if not lo <= number <= hi:
        errors.setdefault(name, []).append(f"Enter a number from {lo} to {hi}.")
        return None
    return number


def _as_float(
    errors: dict[str, list[str]], name: str, value: Any, *, lo: float, hi: float
) -> float | None:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
    except (TypeError, ValueError):
        errors.setdefault(name, []).append("Enter a number.")
        return None
    if number != number or not lo <= number <= hi:  # NaN fails the first test
        errors.setdefault(name, []).append(f"Enter a number from {lo:g} to {hi:g}.")
        return None
    return number


def _as_bool(errors: dict[str, list[str]], name: str, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("", "off", "false", "0", "no"):
        return False
    errors.setdefault(name, []).append("Choose yes or no.")
    return None


def validate_config(data: dict[str, Any], *, partial: bool = False) -> FilterConfig:
    """Check a config dict and return it as a FilterConfig; raise ValidationError {field: [msg]}.

    Missing keys take their defaults. `partial` (stored data) tolerates unknown keys; a form or
    the API gets an error for each.
    """
    if not isinstance(data, dict):
        raise ValidationError("The filter configuration must be an object.")
    base = FilterConfig()
    errors: dict[str, list[str]] = {}
    if not partial:
        errors.update({k: ["Unknown setting."] for k in sorted(set(data) - FIELD_NAMES)})
    out: dict[str, Any] = {}

    enabled = data.get("enabled", base.enabled)
    if not isinstance(enabled, list) or not all(isinstance(x, str) for x in enabled):
        errors["enabled"] = ["Give a list of filter names."]
    else:
        bad = [x for x in enabled if x not in FILTER_NAMES]
        if bad:
            errors["enabled"] = [f"Unknown filter: {', '.join(bad)}."]
        out["enabled"] = [n for n in FILTER_NAMES if n in enabled]

    out["min_chars"] = _as_int(
        errors, "min_chars", data.get("min_chars", base.min_chars), lo=0, hi=10_000_000
    )
    out["max_chars"] = _as_int(
        errors, "max_chars", data.get("max_chars", base.max_chars), lo=1, hi=10_000_000
    )
    if (
        out["min_chars"] is not None
        and out["max_chars"] is not None
        and out["min_chars"] > out["max_chars"]
    ):
        errors.setdefault("max_chars", []).append("The maximum must be at least the minimum.")

    phrases = data.get("refusal_phrases", base.refusal_phrases)
    if isinstance(phrases, str):
        phrases = phrases.splitlines()
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        errors["refusal_phrases"] = ["Give a list of phrases, one per line."]
    else:
        cleaned = []
        for p in phrases:
            p = " ".join(p.split())
            if p and p not in cleaned:
                cleaned.append(p)
        if any(len(p) > 500 for p in cleaned):
            errors["refusal_phrases"] = ["A phrase may be at most 500 characters long."]
        if len(cleaned) > 500:
            errors["refusal_phrases"] = ["At most 500 phrases."]
        out["refusal_phrases"] = cleaned

    out["repetition_n"] = _as_int(
        errors, "repetition_n", data.get("repetition_n", base.repetition_n), lo=1, hi=50
    )
    out["repetition_threshold"] = _as_float(
        errors,
        "repetition_threshold",
        data.get("repetition_threshold", base.repetition_threshold),
        lo=0.01,
        hi=1.0,
    )
    out["echo_threshold"] = _as_float(
        errors, "echo_threshold", data.get("echo_threshold", base.echo_threshold), lo=0.1, hi=1.0
    )
    mode = data.get("reference_mode", base.reference_mode)
    if mode not in REFERENCE_MODES:
        errors["reference_mode"] = [f"Choose one of: {', '.join(REFERENCE_MODES)}."]
    out["reference_mode"] = mode
    out["dedup_threshold"] = _as_float(
        errors, "dedup_threshold", data.get("dedup_threshold", base.dedup_threshold), lo=0.3, hi=1.0
    )
    out["dedup_within_prompt"] = _as_bool(
        errors, "dedup_within_prompt", data.get("dedup_within_prompt", base.dedup_within_prompt)
    )

    teacher_id = data.get("judge_teacher_id", base.judge_teacher_id)
    if teacher_id in ("", None):
        out["judge_teacher_id"] = None
    else:
        out["judge_teacher_id"] = _as_int(errors, "judge_teacher_id", teacher_id, lo=1, hi=2**62)
    rubric = data.get("judge_rubric", base.judge_rubric)
    if not isinstance(rubric, str) or not rubric.strip():
        errors["judge_rubric"] = ["Write a rubric for the judge."]
    elif len(rubric) > 20_000:
        errors["judge_rubric"] = ["The rubric may be at most 20,000 characters long."]
    out["judge_rubric"] = rubric.strip() if isinstance(rubric, str) else base.judge_rubric
    out["judge_threshold"] = _as_float(
        errors,
        "judge_threshold",
        data.get("judge_threshold", base.judge_threshold),
        lo=1.0,
        hi=10.0,
    )
    if (
        isinstance(out.get("enabled"), list)
        and JUDGE in out["enabled"]
        and out["judge_teacher_id"] is None
        and "judge_teacher_id" not in errors
    ):
        errors["judge_teacher_id"] = ["Pick a teacher to act as judge, or turn the judge off."]

    if errors:
        raise ValidationError(errors)
    return FilterConfig(**out)
