from __future__ import annotations

from django.apps import AppConfig


class PromptsConfig(AppConfig):
    name = "distillapp.prompts"
    label = "prompts"
