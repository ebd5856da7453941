"""The review part of the project page."""

from __future__ import annotations

from typing import Any

from distillapp.accounts.models import Role, role_at_least
from distillapp.review import selectors


def project_section(*, project: Any, membership: Any) -> tuple[str, dict[str, Any]] | None:
    stats = selectors.review_stats(project=project)
    return (
        "review/_section.html",
        {
            "project": project,
            "can_review": role_at_least(membership.role, Role.REVIEWER),
            "is_admin": role_at_least(membership.role, Role.ADMIN),
            **stats,
        },
    )
