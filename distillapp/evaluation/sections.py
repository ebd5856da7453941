"""The evaluation section of the project page: eval sets with their counts, add and upload."""

from __future__ import annotations

from typing import Any

from distillapp.accounts.models import Role, role_at_least
from distillapp.evaluation.selectors import (
    eval_runs_for_project,
    eval_sets_for_project,
    reference_queue_count,
)


def project_section(*, project: Any, membership: Any) -> tuple[str, dict[str, Any]]:
    return (
        "evaluation/_section.html",
        {
            "project": project,
            "eval_sets": list(eval_sets_for_project(project=project)[:50]),
            "eval_runs": list(eval_runs_for_project(project=project)[:20]),
            "queue": reference_queue_count(project=project),
            "can_manage": role_at_least(membership.role, Role.ADMIN),
        },
    )
