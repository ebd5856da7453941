"""Decoding settings of a teacher (overridable per job): validation and defaults. No I/O."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

DECODING_KEYS = (
    "system_prompt",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "n",
    "top_logprobs",
)
MAX_TOP_LOGPROBS = 20
MAX_SAMPLES = 64


def _number(
    errors: dict[str, list[str]], key: str, value: Any, *, lo: float, hi: float, integer: bool
) -> Any:
    if value is None or value == "":
        return None
    try:
        number = int(value) if integer else float(value)
        if integer and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        errors.setdefault(key, []).append(
            f"{key} must be {'a whole number' if integer else 'a number'}."
        )
        return None
    if not lo <= number <= hi:
        errors.setdefault(key, []).append(f"{key} must be between {lo:g} and {hi:g}.")
    return number


def decoding_clean(data: dict[str, Any] | None) -> dict[str, Any]:
    """Validated decoding settings; unknown keys and empty values are dropped."""
    data = dict(data or {})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(DECODING_KEYS))
    if unknown:
        errors["decoding"] = [f"Unknown decoding setting(s): {', '.join(unknown)}."]
    out: dict[str, Any] = {}
    system_prompt = data.get("system_prompt")
    if system_prompt:
        if not isinstance(system_prompt, str) or len(system_prompt) > 20_000:
            errors["system_prompt"] = [
                "The system prompt must be text of at most 20,000 characters."
            ]
        else:
            out["system_prompt"] = system_prompt
    for key, lo, hi, integer in (
        ("temperature", 0.0, 2.0, False),
        ("top_p", 0.0, 1.0, False),
        ("max_tokens", 1, 262_144, True),
        ("seed", -(2**62), 2**62, True),
        ("n", 1, MAX_SAMPLES, True),
        ("top_logprobs", 0, MAX_TOP_LOGPROBS, True),
    ):
        value = _number(errors, key, data.get(key), lo=lo, hi=hi, integer=integer)
        if value is not None:
            out[key] = value
    if "top_p" in out and out["top_p"] <= 0:
        errors.setdefault("top_p", []).append("top_p must be above 0.")
    stop = data.get("stop")
    if stop:
        if isinstance(stop, str):
            stop = [s for s in stop.split("\n") if s] if "\n" in stop else [stop]
        if (
            not isinstance(stop, list)
            or not all(isinstance(s, str) and s for s in stop)
            or len(stop) > 4
        ):
            errors["stop"] = ["stop must be up to 4 non-empty strings."]
        else:
            out["stop"] = stop
    if errors:
        raise ValidationError(errors)
    return out


def decoding_merge(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Teacher settings with a job's overrides on top (an override of None or "" removes a key)."""
    merged = dict(base or {})
    for key, value in (overrides or {}).items():
        if value is None or value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return decoding_clean(merged)
