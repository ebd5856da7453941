"""The generation section of the project page: teachers, jobs with their states, the launch form."""

from __future__ import annotations

from typing import Any

from distillapp.accounts.models import Role, role_at_least
from distillapp.generation import selectors
from distillapp.generation.views import launch_context


def project_section(*, project: Any, membership: Any) -> tuple[str, dict[str, Any]]:
    can_manage = role_at_least(membership.role, Role.ADMIN)
    ctx = launch_context(project=project) if can_manage else {"project": project}
    ctx.update(
        teachers=list(selectors.teachers_for_project(project=project)),
        jobs=[
            (job, selectors.job_progress(job=job))
            for job in selectors.jobs_for_project(project=project, limit=20)
        ],
        can_manage=can_manage,
    )
    return "generation/section.html", ctx
