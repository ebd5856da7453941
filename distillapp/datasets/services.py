"""Writes of datasets: create, ask for a version to be built (a background run), cancel or resume
that build, delete a version, set the project's licence; and where a version's files live.

A version never changes once built: there is no update service. The build itself, which a worker
runs, is `build.dataset_version_execute`.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from distillapp.accounts.services import audit_record
from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.services import run_cancel, run_enqueue, run_resume
from distillapp.datasets.models import Dataset, DatasetVersion
from distillapp.datasets.recipe import Recipe, recipe_parse
from distillapp.generation.models import GenerationJob
from distillapp.projects.models import Project

logger = logging.getLogger(__name__)


def dataset_create(*, project: Project, name: str, description: str = "", user: Any) -> Dataset:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["A dataset needs a name."]})
    if len(name) > 120:
        raise ValidationError({"name": ["At most 120 characters."]})
    try:
        with transaction.atomic():
            return Dataset.objects.create(
                project=project, name=name, description=description[:4000], created_by=user
            )
    except IntegrityError:
        raise ValidationError(
            {"name": ["This project already has a dataset of that name."]}
        ) from None


def _recipe_for_project(*, project: Project, data: dict[str, Any] | Recipe | None) -> Recipe:
    recipe = data if isinstance(data, Recipe) else recipe_parse(data)
    if recipe.jobs:
        found = set(
            GenerationJob.objects.filter(project=project, pk__in=recipe.jobs).values_list(
                "pk", flat=True
            )
        )
        missing = [j for j in recipe.jobs if j not in found]
        if missing:
            raise ValidationError({"jobs": [f"No such job in this project: {missing[0]}."]})
    return recipe


def dataset_recipe_validate(*, project: Project, data: dict[str, Any] | None) -> Recipe:
    """Parse a recipe and check that the jobs it names belong to `project`."""
    return _recipe_for_project(project=project, data=data)


def dataset_version_build(
    *, dataset: Dataset, recipe: dict[str, Any] | Recipe | None, user: Any
) -> DatasetVersion:
    """Queue a new version built from `recipe` (its task is sent on commit). Its parent is the
    latest version built so far; its number is the next of the dataset."""
    parsed = _recipe_for_project(project=dataset.project, data=recipe)
    with transaction.atomic():
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        number = (dataset.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        parent = dataset.versions.filter(status=RunStatus.SUCCEEDED).order_by("-number").first()
        version = DatasetVersion.objects.create(
            dataset=dataset,
            project_id=dataset.project_id,
            number=number,
            recipe=parsed.as_dict(),
            parent=parent,
            created_by=user,
            message="Waiting for a worker.",
        )
        run_enqueue(version)
        audit_record(
            org=dataset.project.org,
            actor=user,
            action="dataset.build",
            target=f"{dataset.name} v{number}",
            details={"dataset": dataset.pk, "version": version.pk},
        )
    return version


def dataset_version_cancel(*, version: DatasetVersion) -> DatasetVersion:
    return run_cancel(version)


def dataset_version_resume(*, version: DatasetVersion) -> DatasetVersion:
    """Build a failed or cancelled version again (from nothing: builds keep no partial files)."""
    return run_resume(version)


LICENSE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")


def project_license_set(*, project: Project, license: str, user: Any) -> Project:  # noqa: A002
    """Set the licence the dataset cards of `project` state (`project.settings["license"]`, an
    SPDX id such as apache-2.0, or "other"; empty clears it). Built versions keep the licence
    they were built with (it is copied into their lineage)."""
    value = (license or "").strip()
    if value and (len(value) > 64 or not LICENSE_RE.match(value)):
        raise ValidationError(
            {"license": ["Use an SPDX identifier such as apache-2.0 or cc-by-4.0, or other."]}
        )
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        settings_ = dict(locked.settings or {})
        if value:
            settings_["license"] = value
        else:
            settings_.pop("license", None)
        Project.objects.filter(pk=project.pk).update(settings=settings_)
        audit_record(
            org=project.org,
            actor=user,
            action="dataset.license",
            target=project.name,
            details={"project": project.pk, "license": value},
        )
    project.settings = settings_
    return project


def version_in_use(*, version: DatasetVersion) -> str | None:
    """Why `version` cannot be deleted, or None: a training run used it (reverse relation
    from distillapp.training, looked up by name so this app does not import it)."""
    runs = getattr(version, "training_runs", None)
    if runs is not None and runs.exists():
        return "Training runs used this version; it cannot be deleted."
    return None


def dataset_version_delete(*, version: DatasetVersion) -> None:
    """Delete a version and its files (admins and owners). Refused while it is building and when
    a training run used it."""
    if version.status in (RunStatus.RUNNING, RunStatus.CANCELLING):
        raise ValidationError("This version is being built; cancel the build first.")
    reason = version_in_use(version=version)
    if reason:
        raise ValidationError(reason)
    folder = version_folder(version) if version.path else None
    with transaction.atomic():
        DatasetVersion.objects.filter(pk=version.pk).delete()
        if folder is not None:
            transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))


def relative_folder(version: DatasetVersion) -> str:
    return f"datasets/{version.project_id}/{version.dataset_id}/{version.number}"


def version_folder(version: DatasetVersion) -> Path:
    return Path(settings.MEDIA_ROOT) / (version.path or relative_folder(version))


def version_file(version: DatasetVersion, name: str) -> Path | None:
    """A built version's file, or None when it has none of that name."""
    if not version.is_built or name not in (version.files or {}):
        return None
    path = version_folder(version) / name
    return path if path.is_file() else None
