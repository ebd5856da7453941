"""The prompt sets section of the project page."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from distillapp.accounts.models import Role, role_at_least
from distillapp.prompts.selectors import prompt_sets_for_project


def project_section(*, project: Any, membership: Any) -> tuple[str, dict[str, Any]]:
    return (
        "prompts/_section.html",
        {
            "project": project,
            "prompt_sets": list(prompt_sets_for_project(project=project)),
            "can_manage": role_at_least(membership.role, Role.ADMIN),
            "max_bytes": settings.PROMPT_UPLOAD_MAX_BYTES,
        },
    )
