"""A dataset version's lineage: everything it came from, copied (not referenced) so that it
outlives its sources (deleted jobs, edited teachers, deleted prompt sets)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from distillapp.datasets.models import DatasetVersion
from distillapp.datasets.recipe import Recipe
from distillapp.generation.models import GenerationJob
from distillapp.projects.models import Project
from distillapp.prompts.models import PromptSet


def version_lineage(
    *,
    version: DatasetVersion,
    project: Project,
    recipe: Recipe,
    jobs_used: set[int],
    verdicts: Counter[str],
    built_at: Any,
    parent: DatasetVersion | None,
    reviews: list[tuple[int, str, str, int]],
) -> dict[str, Any]:
    """Everything a version came from. `reviews`: (job id, reviewer, decision, count) of the
    candidate jobs (`build._review_counts`)."""
    from distillapp.filters.selectors import filter_config_for_project

    jobs: list[dict[str, Any]] = [
        dict(j)
        for j in GenerationJob.objects.filter(pk__in=jobs_used)
        .order_by("pk")
        .values(
            "id",
            "prompt_set_id",
            "teacher_snapshot",
            "samples_per_prompt",
            "created_at",
            "status",
            "done",
            "cost_usd",
        )
    ]
    set_ids = sorted({j["prompt_set_id"] for j in jobs})
    prompt_sets = list(
        PromptSet.objects.filter(pk__in=set_ids)
        .order_by("pk")
        .values(
            "id",
            "name",
            "source_name",
            "source_format",
            "sha256",
            "total_count",
            "train_count",
            "heldout_count",
            "heldout_fraction",
            "seed",
        )
    )
    for job in jobs:
        job["created_at"] = job["created_at"].isoformat()
        job["cost_usd"] = str(job["cost_usd"])
        snapshot = dict(job["teacher_snapshot"] or {})
        snapshot.pop("api_key_last4", None)
        job["teacher_snapshot"] = snapshot
    by_reviewer: dict[str, Counter[str]] = {}
    for job_id, username, decision, n in reviews:
        if job_id in jobs_used:
            by_reviewer.setdefault(username, Counter())[decision] += n
    return {
        "project": {"id": project.pk, "name": project.name},
        "license": str((project.settings or {}).get("license", "")),
        "recipe": recipe.as_dict(),
        "prompt_sets": prompt_sets,
        "jobs": jobs,
        "filters": {
            "config": filter_config_for_project(project=project).as_dict(),
            "verdicts_of_rows": dict(sorted(verdicts.items())),
        },
        "reviews": {
            "scope": "every decision on the source jobs' completions",
            "by_reviewer": [
                {"reviewer": name, "decisions": dict(sorted(c.items()))}
                for name, c in sorted(by_reviewer.items())
            ],
        },
        "parent": (
            {"id": parent.pk, "number": parent.number, "sha256": parent.sha256} if parent else None
        ),
        "built_by": version.created_by.username if version.created_by else None,
        "built_at": built_at.isoformat(),
    }
