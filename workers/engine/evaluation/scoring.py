"""Scores of an eval run from plain records: every metric per model, overall and per category,
on all items and on the contamination-clean subset; speed and cost per model; capability
deltas (student − base). Django-free; distillapp.evaluation.scoring feeds it rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from workers.engine.evaluation.length_control import length_controlled_win_rate
from workers.engine.evaluation.pairwise import win_rate
from workers.engine.evaluation.perf import (
    RequestMeasure,
    api_cost_per_1k,
    local_cost_per_1k,
    perf_summary,
)
from workers.engine.evaluation.reference import corpus_chrf, reference_scores
from workers.engine.evaluation.refusal import safety_rates
from workers.engine.evaluation.stats import stderr_of_mean
from workers.engine.evaluation.textstats import format_stats, length_ratio

NO_CATEGORY = "(none)"
MATCH_METRICS = ("exact_match", "normalised_match", "numeric_match")
# The deltas (student − base) shown per category for capability collapse.
COLLAPSE_METRICS = ("normalised_match", "numeric_match", "chrf", "win_rate")


@dataclass(frozen=True)
class ItemRec:
    id: int
    category: str
    set_kind: str
    reference: str | None
    must_refuse: bool | None
    contaminated: bool = False


@dataclass(frozen=True)
class AnswerRec:
    text: str
    ok: bool = True
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    batch_size: int = 1
    batch_ms: int = 0


def _num(value: float) -> float | None:
    """JSON has no NaN: an undefined number is null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _group(
    items: Sequence[ItemRec],
    answers: dict[int, AnswerRec],
    baseline: dict[int, AnswerRec] | None,
    outcomes: dict[int, float | None] | None,
    *,
    is_baseline: bool,
) -> dict[str, Any]:
    answered = [i for i in items if i.id in answers and answers[i.id].ok]
    out: dict[str, Any] = {"n": len(items), "answered": len(answered)}
    with_ref = [i for i in answered if i.reference]
    out["n_reference"] = len(with_ref)
    if with_ref:
        scores = [reference_scores(answers[i.id].text, i.reference or "") for i in with_ref]
        for metric in (*MATCH_METRICS, "chrf"):
            values = [s[metric] for s in scores]
            out[metric] = sum(values) / len(values)
            out[f"{metric}_stderr"] = _num(stderr_of_mean(values))
        out["chrf_corpus"] = corpus_chrf(
            [answers[i.id].text for i in with_ref], [i.reference or "" for i in with_ref]
        )
    safety = [i for i in answered if i.must_refuse is not None]
    if safety:
        rates = safety_rates((bool(i.must_refuse), answers[i.id].text) for i in safety)
        out["must_refuse"] = rates.must_refuse
        out["harmless"] = rates.harmless
        out["refusal_rate"] = _num(rates.refusal_rate)
        out["over_refusal_rate"] = _num(rates.over_refusal_rate)
    out["format"] = format_stats(answers[i.id].text for i in answered)
    if baseline is not None and not is_baseline:
        both = [i for i in answered if i.id in baseline and baseline[i.id].ok]
        if both:
            out["length_ratio"] = _num(
                length_ratio(
                    [answers[i.id].text for i in both], [baseline[i.id].text for i in both]
                )
            )
    if outcomes is not None and not is_baseline:
        judged = [i for i in items if outcomes.get(i.id) is not None and baseline is not None]
        if judged:
            values = [float(outcomes[i.id]) for i in judged]  # type: ignore[arg-type]
            wr = win_rate(values)
            lc = length_controlled_win_rate(
                values,
                [len(answers[i.id].text) for i in judged],
                [len(baseline[i.id].text) for i in judged],  # type: ignore[index]
            )
            out.update(
                win_rate=wr.win_rate,
                win_rate_ci=[_num(wr.ci_low), _num(wr.ci_high)],
                win_rate_stderr=_num(stderr_of_mean(values)),
                wins=wr.wins,
                ties=wr.ties,
                losses=wr.losses,
                judged=wr.n,
                lc_win_rate=_num(lc.length_controlled),
                lc_warning=lc.warning,
            )
    return out


def _scores(
    items: Sequence[ItemRec],
    model_keys: Sequence[str],
    answers: dict[str, dict[int, AnswerRec]],
    outcomes: dict[str, dict[int, float | None]],
    baseline_key: str,
) -> dict[str, Any]:
    categories: dict[str, list[ItemRec]] = {}
    for item in items:
        categories.setdefault(item.category or NO_CATEGORY, []).append(item)
    baseline = answers.get(baseline_key) if baseline_key else None
    out: dict[str, Any] = {}
    for key in model_keys:
        mine = answers.get(key, {})
        judged = outcomes.get(key) if outcomes else None
        is_base = key == baseline_key
        out[key] = {
            "overall": _group(items, mine, baseline, judged, is_baseline=is_base),
            "categories": {
                name: _group(group, mine, baseline, judged, is_baseline=is_base)
                for name, group in sorted(categories.items())
            },
        }
    return out


def perf_for(spec: dict[str, Any], answers: Iterable[AnswerRec], *, gpu_hour_usd: float) -> dict:
    """Latency p50/p95 (batch-1 requests), tokens/s at batch 1 and batched, $ per 1k requests."""
    rows = [a for a in answers if a.ok]
    single = [a for a in rows if a.batch_size <= 1]
    # batch_ms = 0: an API phase that was cut off before its wall time was known.
    batched = [a for a in rows if a.batch_size > 1 and a.batch_ms > 0]
    measures = [
        RequestMeasure(a.latency_ms / 1000, a.prompt_tokens, a.completion_tokens) for a in single
    ]
    p = perf_summary(measures)
    out: dict[str, Any] = {
        "requests": len(rows),
        "latency_p50_s": _num(p.latency_p50),
        "latency_p95_s": _num(p.latency_p95),
        "tokens_per_s_batch1": _num(p.tokens_per_second),
        "tokens_per_s_batched": None,
        "mean_completion_tokens": (
            sum(a.completion_tokens for a in rows) / len(rows) if rows else None
        ),
    }
    if batched:
        wall = sum(a.batch_ms / a.batch_size for a in batched) / 1000
        tokens = sum(a.completion_tokens for a in batched)
        out["tokens_per_s_batched"] = tokens / wall if wall > 0 else None
        out["batch_size"] = max(a.batch_size for a in batched)
    every = [
        RequestMeasure(a.latency_ms / 1000, a.prompt_tokens, a.completion_tokens) for a in rows
    ]
    if spec.get("kind") == "api":
        out["cost_basis"] = "teacher prices × measured tokens"
        out["cost_per_1k_usd"] = _num(
            api_cost_per_1k(
                every,
                input_usd_per_mtok=float(spec.get("price_input_per_m") or 0),
                output_usd_per_mtok=float(spec.get("price_output_per_m") or 0),
            )
        )
    else:
        tps = out["tokens_per_s_batched"] or out["tokens_per_s_batch1"] or 0.0
        out["cost_basis"] = f"GPU hour ${gpu_hour_usd:g} × measured throughput"
        out["cost_per_1k_usd"] = _num(
            local_cost_per_1k(every, tokens_per_second=tps, gpu_hour_usd=gpu_hour_usd)
        )
    return out


def collapse_deltas(
    scores: dict[str, Any], *, student_key: str, base_key: str, kinds: set[str] | None = None
) -> dict[str, dict[str, float | None]]:
    """Per category: student − base for each COLLAPSE_METRICS value both have."""
    student = scores.get(student_key, {}).get("categories", {})
    base = scores.get(base_key, {}).get("categories", {})
    out: dict[str, dict[str, float | None]] = {}
    for category in sorted(set(student) & set(base)):
        row: dict[str, float | None] = {}
        for metric in COLLAPSE_METRICS:
            a, b = student[category].get(metric), base[category].get(metric)
            if isinstance(a, int | float) and isinstance(b, int | float):
                row[metric] = a - b
        if row:
            out[category] = row
    return out


def score_run(
    *,
    items: Sequence[ItemRec],
    specs: Sequence[dict[str, Any]],
    answers: dict[str, dict[int, AnswerRec]],
    outcomes: dict[str, dict[int, float | None]],
    baseline_key: str,
    gpu_hour_usd: float,
) -> dict[str, Any]:
    """Every score of the run: `subsets.all` and `subsets.clean` (items not contaminated), each
    model → overall and per category; `perf` per model; `collapse` per student with a base."""
    keys = [s["key"] for s in specs]
    clean = [i for i in items if not i.contaminated]
    subsets = {
        "all": _scores(items, keys, answers, outcomes, baseline_key),
        "clean": _scores(clean, keys, answers, outcomes, baseline_key),
    }
    perf = {
        s["key"]: perf_for(s, answers.get(s["key"], {}).values(), gpu_hour_usd=gpu_hour_usd)
        for s in specs
    }
    collapse = {}
    for spec in specs:
        base_key = str(spec.get("base_key") or "")
        if spec.get("role") == "student" and base_key in keys:
            collapse[spec["key"]] = {
                "base_key": base_key,
                "all": collapse_deltas(subsets["all"], student_key=spec["key"], base_key=base_key),
                "clean": collapse_deltas(
                    subsets["clean"], student_key=spec["key"], base_key=base_key
                ),
            }
    return {
        "items": len(items),
        "clean_items": len(clean),
        "subsets": subsets,
        "perf": perf,
        "collapse": collapse,
    }
