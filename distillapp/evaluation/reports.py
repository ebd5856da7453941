"""What shows an eval run: the dashboard's tables and chart data, the self-contained HTML
report, the results JSON in lm-evaluation-harness's shape, and per-sample JSONL (streamed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.template.loader import render_to_string
from django.utils import timezone

from distillapp.evaluation.human_verdicts import judge_human_agreement
from distillapp.evaluation.models import EvalAnswer, EvalItem, EvalJudgement, EvalRun
from distillapp.evaluation.selectors import eval_run_contaminated, eval_run_samples

RESULTS_VERSION = 1
REPORT_SAMPLES = 300
LEADER_METRICS = (
    "exact_match",
    "normalised_match",
    "numeric_match",
    "chrf",
    "win_rate",
    "lc_win_rate",
    "length_ratio",
    "refusal_rate",
    "over_refusal_rate",
)
HARNESS_METRICS = ("exact_match", "normalised_match", "numeric_match", "chrf", "win_rate")


def _subset(run: EvalRun, name: str) -> dict[str, Any]:
    return ((run.results or {}).get("subsets") or {}).get(name) or {}


def leaderboard(run: EvalRun) -> list[dict[str, Any]]:
    """One row per model: its overall metrics on all items and on the clean subset, and perf."""
    perf = (run.results or {}).get("perf") or {}
    every, clean = _subset(run, "all"), _subset(run, "clean")
    rows = []
    for spec in run.model_specs:
        key = spec["key"]
        rows.append(
            {
                "key": key,
                "label": spec["label"],
                "role": spec["role"],
                "kind": spec["kind"],
                "baseline": key == run.baseline_key,
                "all": (every.get(key) or {}).get("overall") or {},
                "clean": (clean.get(key) or {}).get("overall") or {},
                "perf": perf.get(key) or {},
            }
        )
    return rows


def quality_metric(run: EvalRun) -> str:
    """What the Pareto chart calls quality: the judge's win rate when there is one, else the
    normalised match on references, else chrF."""
    rows = leaderboard(run)
    for metric in ("win_rate", "normalised_match", "chrf"):
        if any(isinstance(r["all"].get(metric), int | float) for r in rows):
            return metric
    return "normalised_match"


def chart_data(run: EvalRun) -> dict[str, Any]:
    metric = quality_metric(run)
    points = []
    for row in leaderboard(run):
        quality = row["all"].get(metric)
        if metric == "win_rate" and row["baseline"]:
            quality = 0.5  # the baseline against itself
        points.append(
            {
                "label": row["label"],
                "role": row["role"],
                "quality": quality,
                "cost_per_1k_usd": row["perf"].get("cost_per_1k_usd"),
                "latency_p95_s": row["perf"].get("latency_p95_s"),
            }
        )
    return {"metric": metric, "points": points}


def category_table(run: EvalRun, subset: str = "all") -> list[dict[str, Any]]:
    scores = _subset(run, subset)
    names = sorted({c for s in scores.values() for c in (s.get("categories") or {})})
    return [
        {
            "category": name,
            "models": [
                {
                    "label": spec["label"],
                    "scores": ((scores.get(spec["key"]) or {}).get("categories") or {}).get(name)
                    or {},
                }
                for spec in run.model_specs
            ],
        }
        for name in names
    ]


def collapse_table(run: EvalRun) -> list[dict[str, Any]]:
    labels = {s["key"]: s["label"] for s in run.model_specs}
    out = []
    for key, entry in ((run.results or {}).get("collapse") or {}).items():
        out.append(
            {
                "student": labels.get(key, key),
                "base": labels.get(entry["base_key"], entry["base_key"]),
                "rows": [
                    {"category": c, "all": d, "clean": (entry.get("clean") or {}).get(c) or {}}
                    for c, d in (entry.get("all") or {}).items()
                ],
            }
        )
    return out


def safety_table(run: EvalRun) -> list[dict[str, Any]]:
    return [
        {
            "label": r["label"],
            **{
                k: r["all"].get(k)
                for k in ("must_refuse", "harmless", "refusal_rate", "over_refusal_rate")
            },
        }
        for r in leaderboard(run)
        if r["all"].get("must_refuse") or r["all"].get("harmless")
    ]


def dashboard_context(run: EvalRun) -> dict[str, Any]:
    results = run.results or {}
    return {
        "run": run,
        "leaderboard": leaderboard(run),
        "categories": category_table(run),
        "collapse": collapse_table(run),
        "safety": safety_table(run),
        "contamination": results.get("contamination") or {},
        "agreement": judge_human_agreement(run=run),
        "chart": chart_data(run),
        "has_judge": bool(run.judge),
        "scored": bool(results),
        "lineage": run.lineage,
        "judge": run.judge,
        "labels": {s["key"]: s["label"] for s in run.model_specs},
    }


def _harness_entry(scores: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"alias": "", "n": scores.get("n"), "answered": scores.get("answered")}
    for metric in HARNESS_METRICS:
        if metric in scores:
            out[metric] = scores[metric]
            out[f"{metric}_stderr"] = scores.get(f"{metric}_stderr")
    for metric in ("lc_win_rate", "length_ratio", "refusal_rate", "over_refusal_rate"):
        if scores.get(metric) is not None:
            out[metric] = scores[metric]
            out[f"{metric}_stderr"] = None  # no standard error is computed for these
    return out


def results_json(run: EvalRun) -> dict[str, Any]:
    """lm-evaluation-harness's shape: `results` per task (one task per model and category, and
    the model overall) with each metric and its `<metric>_stderr`, `configs`, `versions`; the
    clean-subset scores in `results_clean`; lineage, judge and agreement besides."""
    results: dict[str, Any] = {}
    clean: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    versions: dict[str, int] = {}
    for subset, target in (("all", results), ("clean", clean)):
        scores = _subset(run, subset)
        for spec in run.model_specs:
            model = scores.get(spec["key"]) or {}
            tasks = {f"{spec['key']}": model.get("overall") or {}}
            for category, cat in (model.get("categories") or {}).items():
                tasks[f"{spec['key']}::{category}"] = cat
            for task, values in tasks.items():
                entry = _harness_entry(values)
                entry["alias"] = task.replace(spec["key"], spec["label"], 1)
                target[task] = entry
                if subset == "all":
                    configs[task] = {
                        "task": task,
                        "model": spec["label"],
                        "model_args": {k: v for k, v in spec.items() if k != "decoding"},
                        "eval_sets": [s["name"] for s in run.lineage.get("eval_sets", [])],
                        "generation_kwargs": {**run.decoding, **(spec.get("decoding") or {})},
                        "num_fewshot": 0,
                        "metric_list": [{"metric": m} for m in HARNESS_METRICS],
                    }
                    versions[task] = RESULTS_VERSION
    contamination = dict((run.results or {}).get("contamination") or {})
    return {
        "results": results,
        "results_clean": clean,
        "configs": configs,
        "versions": versions,
        "n-samples": {
            "all": (run.results or {}).get("items"),
            "clean": (run.results or {}).get("clean_items"),
        },
        "perf": (run.results or {}).get("perf") or {},
        "judge": {k: v for k, v in (run.judge or {}).items() if k != "system_prompt"},
        "judge_human_agreement": judge_human_agreement(run=run),
        "contamination": {k: v for k, v in contamination.items() if k != "item_ngrams"},
        "lineage": run.lineage,
        "config": {
            "run_id": run.pk,
            "baseline": run.baseline_key,
            "decoding": run.decoding,
            "status": run.status,
        },
        "date": run.finished_at.isoformat() if run.finished_at else None,
    }


def samples_jsonl(run: EvalRun) -> Iterator[bytes]:
    """One JSON line per (item, model) answer, with its judgement; streamed a page at a time."""
    flagged = eval_run_contaminated(run=run)
    labels = {s["key"]: s["label"] for s in run.model_specs}
    after = 0
    while True:
        items = list(
            EvalItem.objects.filter(eval_set__in=run.eval_sets.all(), id__gt=after)
            .select_related("eval_set")
            .order_by("id")[:500]
        )
        if not items:
            return
        answers = EvalAnswer.objects.filter(run=run, item__in=items).order_by(
            "item_id", "model_key"
        )
        judgements = {
            (j.item_id, j.model_key): j
            for j in EvalJudgement.objects.filter(run=run, item__in=items)
        }
        by_id = {i.pk: i for i in items}
        lines = []
        for a in answers:
            item = by_id[a.item_id]
            j = judgements.get((a.item_id, a.model_key))
            lines.append(
                json.dumps(
                    {
                        "run_id": run.pk,
                        "model": a.model_key,
                        "model_label": labels.get(a.model_key, a.model_key),
                        "item_id": item.pk,
                        "eval_set": item.eval_set.name,
                        "category": item.category,
                        "messages": item.chat,
                        "reference": item.reference,
                        "must_refuse": item.must_refuse,
                        "contaminated": str(item.pk) in flagged,
                        "answer": a.text,
                        "ok": a.ok,
                        "error": a.error,
                        "prompt_tokens": a.prompt_tokens,
                        "completion_tokens": a.completion_tokens,
                        "latency_ms": a.latency_ms,
                        "batch_size": a.batch_size,
                        "cost_usd": str(a.cost_usd),
                        "judgement": None
                        if j is None
                        else {
                            "outcome": j.outcome,
                            "candidate_first": j.candidate_first,
                            "baseline_first": j.baseline_first,
                            "rationale_candidate_first": j.rationale_candidate_first,
                            "rationale_baseline_first": j.rationale_baseline_first,
                            "error": j.error,
                        },
                    },
                    ensure_ascii=False,
                )
            )
        if lines:
            yield ("\n".join(lines) + "\n").encode("utf-8")
        after = items[-1].pk


def report_html(run: EvalRun) -> str:
    """The self-contained report: inline CSS, no script or asset fetched, every text escaped."""
    page = eval_run_samples(run=run, limit=REPORT_SAMPLES)
    context = dashboard_context(run)
    context.update(
        samples=page.samples,
        more_samples=page.next_cursor is not None,
        report_samples=REPORT_SAMPLES,
        generated_at=timezone.now(),
        specs=run.model_specs,
        results_data=results_json(run),
    )
    return render_to_string("evaluation/report.html", context)
