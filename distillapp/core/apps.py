from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "distillapp.core"
    label = "core"

    def ready(self) -> None:
        from distillapp.core import checks  # noqa: F401  (registers the system checks)
