"""Writes for projects."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from distillapp.accounts.models import Organization
from distillapp.projects.models import Project


def _clean_name(name: str, *, org_id: int, exclude_pk: int | None = None) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the project a name."})
    if len(name) > 120:
        raise ValidationError({"name": "Keep the name under 120 characters."})
    clash = Project.objects.filter(org_id=org_id, name__iexact=name)
    if exclude_pk is not None:
        clash = clash.exclude(pk=exclude_pk)
    if clash.exists():
        raise ValidationError({"name": "This organisation already has a project with this name."})
    return name


def project_create(
    *, org: Organization, name: str, guidelines_md: str = "", created_by: Any = None
) -> Project:
    return Project.objects.create(
        org=org,
        name=_clean_name(name, org_id=org.pk),
        guidelines_md=guidelines_md or "",
        created_by=created_by,
    )


def project_update(
    *,
    project: Project,
    name: str | None = None,
    guidelines_md: str | None = None,
    settings: dict | None = None,
) -> Project:
    fields = []
    if name is not None:
        project.name = _clean_name(name, org_id=project.org_id, exclude_pk=project.pk)
        fields.append("name")
    if guidelines_md is not None:
        project.guidelines_md = guidelines_md
        fields.append("guidelines_md")
    if settings is not None:
        project.settings = {**project.settings, **settings}
        fields.append("settings")
    if fields:
        project.save(update_fields=fields)
    return project


@transaction.atomic
def project_delete(*, project: Project) -> None:
    """Delete a project and everything in it. Prompt sets go first, a chunk of prompts at a time,
    so a project with millions of prompts is never collected into memory at once."""
    from distillapp.prompts.models import PromptSet
    from distillapp.prompts.services import prompt_set_delete

    for prompt_set in PromptSet.objects.filter(project=project):
        prompt_set_delete(prompt_set=prompt_set)
    project.delete()
