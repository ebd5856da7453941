"""The recipe of a dataset version: what it takes from the project, as plain validated data.

An empty recipe means the defaults: every approved pair (edits included) of every job, one row per
approved sample, reasoning kept, exact duplicate pairs dropped, no validation split.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

PER_PROMPT = ("all", "one")
REASONING = ("keep", "strip", "match_reference")
DEDUPE = ("pair", "target")

THINK_RE = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


@dataclass(frozen=True)
class Recipe:
    # Source jobs by id; empty = every job of the project.
    jobs: list[int] = field(default_factory=list)
    # Also take completions the filters passed (or a human restored) that nobody has decided yet.
    include_unreviewed: bool = False
    # Only completions whose judge score is at least this (those without a score are left out).
    min_judge_score: float | None = None
    # "all": every qualifying sample; "one": per prompt, the sample picked as best, else the
    # highest judge score, then the lowest job id, sample index and completion id.
    per_prompt: str = "all"
    # "keep" the <think>…</think> block, "strip" it, or keep only rows whose final answer (the text
    # after the block) equals the prompt's reference (case and whitespace insensitive).
    reasoning: str = "keep"
    # "pair": drop a row whose prompt and target are both those of an earlier row; "target": drop
    # a row whose target text is that of any earlier row.
    dedupe: str = "pair"
    validation_fraction: float = 0.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bool(value: Any, name: str, errors: dict[str, list[str]]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {
        "1",
        "true",
        "on",
        "yes",
        "0",
        "false",
        "off",
        "no",
        "",
    }:
        return value.lower() in {"1", "true", "on", "yes"}
    errors.setdefault(name, []).append("Must be true or false.")
    return False


def recipe_parse(data: dict[str, Any] | None) -> Recipe:
    """Validate a recipe given as a dict (API body or form); unknown keys are refused, so a recipe
    cannot name things the selector does not check (held-out prompts, other projects' sets)."""
    data = dict(data or {})
    errors: dict[str, list[str]] = {}
    known = set(Recipe.__dataclass_fields__)
    for key in sorted(set(data) - known):
        errors.setdefault(key, []).append("Unknown recipe field.")
    jobs_raw = data.get("jobs") or []
    jobs: list[int] = []
    if not isinstance(jobs_raw, list | tuple):
        errors.setdefault("jobs", []).append("Must be a list of job ids.")
    else:
        for value in jobs_raw:
            try:
                job_id = int(value)
            except (TypeError, ValueError):
                errors.setdefault("jobs", []).append(f"Not a job id: {value!r}.")
                continue
            if not 0 < job_id < 2**63:
                errors.setdefault("jobs", []).append(f"Not a job id: {value!r}.")
                continue
            jobs.append(job_id)
    score_raw = data.get("min_judge_score")
    score: float | None = None
    if score_raw not in (None, ""):
        try:
            score = float(score_raw)
        except (TypeError, ValueError):
            errors.setdefault("min_judge_score", []).append("Must be a number.")
        else:
            if score != score or score in (float("inf"), float("-inf")):
                errors.setdefault("min_judge_score", []).append("Must be a finite number.")
                score = None
    choices = {"per_prompt": PER_PROMPT, "reasoning": REASONING, "dedupe": DEDUPE}
    picked: dict[str, str] = {}
    for name, allowed in choices.items():
        value = data.get(name) or getattr(Recipe, name)
        if value not in allowed:
            errors.setdefault(name, []).append(f"Must be one of {', '.join(allowed)}.")
            value = getattr(Recipe, name)
        picked[name] = str(value)
    fraction = 0.0
    raw_fraction = data.get("validation_fraction")
    if raw_fraction not in (None, ""):
        try:
            fraction = float(raw_fraction)
        except (TypeError, ValueError):
            errors.setdefault("validation_fraction", []).append("Must be a number.")
        else:
            if not 0.0 <= fraction < 1.0:
                errors.setdefault("validation_fraction", []).append("Must be in [0, 1).")
                fraction = 0.0
    seed = 0
    raw_seed = data.get("seed")
    if raw_seed not in (None, ""):
        try:
            seed = int(raw_seed)
        except (TypeError, ValueError):
            errors.setdefault("seed", []).append("Must be an integer.")
        else:
            if not 0 <= seed < 2**63:
                errors.setdefault("seed", []).append("Must be between 0 and 2^63.")
                seed = 0
    include = _bool(data.get("include_unreviewed", False), "include_unreviewed", errors)
    if errors:
        raise ValidationError(errors)
    return Recipe(
        jobs=sorted(set(jobs)),
        include_unreviewed=include,
        min_judge_score=score,
        per_prompt=picked["per_prompt"],
        reasoning=picked["reasoning"],
        dedupe=picked["dedupe"],
        validation_fraction=fraction,
        seed=seed,
    )


def strip_reasoning(text: str) -> str:
    return THINK_RE.sub("", text, count=1)


def final_answer(text: str) -> str:
    """The text after a leading reasoning block, normalised for comparison with a reference."""
    return " ".join(strip_reasoning(text).split()).casefold()


def validation_unit(seed: int, prompt_id: int) -> float:
    """A prompt's place in [0, 1) for the seeded split: validation when below the fraction."""
    digest = hashlib.blake2b(f"{seed}:{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def dedupe_key(mode: str, prompt_id: int, target: str) -> int:
    """8 bytes that stand for a row in dedupe: its target (and, for "pair", its prompt)."""
    h = hashlib.blake2b(digest_size=8)
    if mode == "pair":
        h.update(str(prompt_id).encode())
        h.update(b"\0")
    h.update(target.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "big")
