"""Writes for projects."""

from __future__ import annotations

from collections.abc import Callable
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
def project_delete(*, project: Project, actor: Any | None = None) -> None:
    """Delete a project and everything in it. The apps above go first with what they hold in bulk
    (`before_project_delete`: prompt sets, a chunk of prompts at a time), so a project with
    millions of prompts is never collected into memory at once. The delete is recorded in the
    organisation's audit log (`actor` None: the request's user, else "system")."""
    from distillapp.accounts.services import audit_record

    audit_record(
        org=project.org,
        actor=actor,
        action="project.delete",
        target=project.name,
        details={"project": project.pk},
    )

    for callback in _BEFORE_DELETE:
        callback(project)
    project.delete()


_BEFORE_DELETE: list[Callable[[Project], None]] = []


def before_project_delete(callback: Callable[[Project], None]) -> None:
    """Let an app above this one delete its part of a project first (in its own, cheaper way)."""
    _BEFORE_DELETE.append(callback)
