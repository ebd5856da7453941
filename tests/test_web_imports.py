"""The web process must not pay for the ML stack: importing the app never imports torch."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import importlib, pkgutil, sys
import django
django.setup()
import distillapp
import distillapp.urls  # every view, the API and the task modules they enqueue through
from django.urls import get_resolver
get_resolver().url_patterns
for module in pkgutil.walk_packages(distillapp.__path__, "distillapp."):
    if ".migrations" in module.name:
        continue
    importlib.import_module(module.name)
heavy = sorted(m for m in ("torch", "transformers", "peft", "accelerate") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_importing_the_web_app_does_not_import_torch():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "distillapp.settings"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "none", (
        f"heavy modules imported: {result.stdout}"
    )
