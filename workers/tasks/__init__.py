"""Celery tasks, one module per area. Import them here so every worker registers them all."""

from __future__ import annotations
