"""The datasets section of the project page."""

from __future__ import annotations

from typing import Any

from distillapp.accounts.models import Role, role_at_least
from distillapp.datasets.selectors import datasets_for_project


def project_section(*, project: Any, membership: Any) -> tuple[str, dict[str, Any]]:
    return (
        "datasets/_section.html",
        {
            "project": project,
            "datasets": list(datasets_for_project(project=project)[:20]),
            "can_manage": role_at_least(membership.role, Role.ADMIN),
        },
    )
