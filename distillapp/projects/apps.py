from __future__ import annotations

from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "distillapp.projects"
    label = "projects"
