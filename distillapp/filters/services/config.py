"""Writes of the filter configuration (`Project.settings["filters"]`)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from distillapp.filters.config import FilterConfig, validate_config
from distillapp.projects.models import Project


def filter_config_update(*, project: Project, data: dict[str, Any]) -> FilterConfig:
    """Validate and store `Project.settings["filters"]`; missing keys take their defaults."""
    from distillapp.generation.models import Teacher, TeacherKind

    config = validate_config(data)
    if config.judge_teacher_id is not None:
        teacher = Teacher.objects.filter(pk=config.judge_teacher_id, project=project).first()
        if teacher is None:
            raise ValidationError({"judge_teacher_id": ["Pick a teacher of this project."]})
        if teacher.kind == TeacherKind.HF_LOCAL and not teacher.model_path:
            raise ValidationError(
                {"judge_teacher_id": ["That local teacher has no model folder to judge with."]}
            )
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        locked.settings = {**(locked.settings or {}), "filters": config.as_dict()}
        locked.save(update_fields=["settings"])
    project.settings = locked.settings
    return config
