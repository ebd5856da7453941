from __future__ import annotations

from typing import Any

from distillapp.accounts.models import Role, role_at_least
from distillapp.filters.selectors import filter_run_latest, filter_summary


def project_section(*, project: Any, membership: Any) -> tuple[str, dict[str, Any]] | None:
    """The filters' part of the project page: counts per filter, links to browse, configure, run."""
    return (
        "filters/section.html",
        {
            "project": project,
            "summary": filter_summary(project=project),
            "latest_run": filter_run_latest(project=project),
            "can_manage": role_at_least(membership.role, Role.ADMIN),
        },
    )
