from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Avg, Count, Q, QuerySet
from django.utils import timezone

from distillapp.core.runs.models import CLAIMED_STATUSES
from distillapp.filters.config import (
    FILTER_LABELS,
    FILTER_NAMES,
    FilterConfig,
    config_from_settings,
)
from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus, VerdictState
from distillapp.projects.models import Project

# A queued run nobody picked up for this long no longer blocks a new one.
QUEUED_EXPIRES = timedelta(hours=1)


def filter_config_for_project(*, project: Project) -> FilterConfig:
    return config_from_settings(project.settings)


def filter_run_active(*, project: Project) -> FilterRun | None:
    """The run that blocks starting another one: queued recently, or claimed with a live
    heartbeat (a run whose worker died is re-sent by the sweep and no longer blocks)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RUN_STALE_SECONDS)
    return (
        FilterRun.objects.filter(project=project)
        .filter(
            Q(status=RunStatus.QUEUED, created_at__gte=now - QUEUED_EXPIRES)
            | Q(status__in=CLAIMED_STATUSES, heartbeat_at__gte=stale)
        )
        .order_by("-created_at", "-id")
        .first()
    )


def filter_run_latest(*, project: Project) -> FilterRun | None:
    return (
        FilterRun.objects.filter(project=project)
        .select_related("job")
        .order_by("-created_at", "-id")
        .first()
    )


def filter_runs_recent(*, project: Project, limit: int = 10) -> list[FilterRun]:
    return list(FilterRun.objects.filter(project=project).order_by("-created_at", "-id")[:limit])


def _with_flag(qs: QuerySet[CompletionVerdict], flag: str) -> QuerySet[CompletionVerdict]:
    if connection.vendor == "postgresql":
        return qs.filter(flags__contains=[flag])
    # SQLite has no JSON containment; the quoted name cannot match inside another flag name.
    return qs.filter(flags__icontains=f'"{flag}"')


def verdicts_for_project(
    *,
    project: Project,
    states: Sequence[str] | None = None,
    flag: str | None = None,
    job_id: int | None = None,
    after_id: int | None = None,
    limit: int = 50,
    judge_error: bool = False,
) -> list[CompletionVerdict]:
    """Verdicts (with completion and prompt) in id order, keyset-paginated by `after_id`;
    `judge_error`: only those the judge could not score (a failed call or an unreadable reply)."""
    qs = CompletionVerdict.objects.filter(project=project).select_related(
        "completion", "completion__prompt", "restored_by"
    )
    if states:
        qs = qs.filter(state__in=states)
    if flag:
        qs = _with_flag(qs, flag)
    if job_id:
        qs = qs.filter(completion__job_id=job_id)
    if judge_error:
        qs = qs.exclude(judge_error="")
    if after_id:
        qs = qs.filter(id__gt=after_id)
    return list(qs.order_by("id")[:limit])


def filter_summary(*, project: Project) -> dict[str, Any]:
    """Counts for the project page and the API: completions, verdict states, flags, judge."""
    from distillapp.generation.models import Completion, CompletionStatus

    config = filter_config_for_project(project=project)
    verdicts = CompletionVerdict.objects.filter(project=project)
    states = dict(verdicts.values_list("state").annotate(n=Count("id")).order_by())
    completions_ok = Completion.objects.filter(
        job__project=project, status=CompletionStatus.OK
    ).count()
    flag_counts: Counter[str] = Counter()
    for flags in verdicts.filter(
        state__in=[VerdictState.FILTERED, VerdictState.RESTORED]
    ).values_list("flags", flat=True):
        flag_counts.update(flags or [])
    judged = verdicts.filter(judge_score__isnull=False).aggregate(
        n=Count("id"), mean=Avg("judge_score")
    )
    by_state = {s.value: states.get(s.value, 0) for s in VerdictState}
    return {
        "completions": completions_ok,
        "unfiltered": max(completions_ok - sum(by_state.values()), 0),
        "by_state": by_state,
        "by_filter": [
            {
                "name": name,
                "label": FILTER_LABELS[name],
                "enabled": config.is_enabled(name),
                "count": flag_counts.get(name, 0),
            }
            for name in FILTER_NAMES
        ],
        "judge": {
            "scored": judged["n"] or 0,
            "mean_score": round(judged["mean"], 2) if judged["mean"] is not None else None,
            "threshold": config.judge_threshold,
            # Calls that failed or replies that were not the JSON asked for: no score, kept.
            "errors": verdicts.exclude(judge_error="").count(),
        },
    }
