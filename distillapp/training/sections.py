"""The training section of the project page."""

from __future__ import annotations

from typing import Any

from distillapp.accounts.models import Role, role_at_least
from distillapp.training.selectors import base_models_for_project, training_runs_for_project


def project_section(*, project: Any, membership: Any) -> tuple[str, dict[str, Any]]:
    return (
        "training/_section.html",
        {
            "project": project,
            "runs": list(training_runs_for_project(project=project)[:5]),
            "base_models": list(base_models_for_project(project=project)[:10]),
            "can_manage": role_at_least(membership.role, Role.ADMIN),
        },
    )
