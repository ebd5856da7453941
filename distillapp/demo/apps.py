from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """`manage.py demo_setup`: the demo organisation, admin and project `make run` starts with. It
    touches every app, so it sits above them all."""

    name = "distillapp.demo"
    label = "demo"
