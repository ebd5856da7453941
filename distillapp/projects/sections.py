"""Sections of the project page contributed by other apps.

Each provider returns (template name, context) or None; the project page renders them in order,
so an app adds its part of the page without editing this app.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

PROVIDERS = [
    "distillapp.prompts.sections.project_section",
    "distillapp.generation.sections.project_section",
    "distillapp.filters.sections.project_section",
    "distillapp.review.sections.project_section",
    "distillapp.datasets.sections.project_section",
    "distillapp.training.sections.project_section",
    "distillapp.evaluation.sections.project_section",
]


def project_sections(*, project: Any, membership: Any) -> list[tuple[str, dict[str, Any]]]:
    sections = []
    for dotted in PROVIDERS:
        module_name, func_name = dotted.rsplit(".", 1)
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        section = getattr(module, func_name)(project=project, membership=membership)
        if section is not None:
            sections.append(section)
    return sections
