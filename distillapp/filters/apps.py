from __future__ import annotations

from django.apps import AppConfig


class FiltersConfig(AppConfig):
    name = "distillapp.filters"
    label = "filters"
