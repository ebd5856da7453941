"""Writes of the filters app, by concern: configuration, runs, the pipeline, human overrides.
Callers import from here."""

from __future__ import annotations

from distillapp.filters.services.config import filter_config_update
from distillapp.filters.services.runs import (
    filter_run_cancel,
    filter_run_execute,
    filter_run_start,
    filters_queue,
    filters_start_for_job,
)
from distillapp.filters.services.verdicts import verdict_restore, verdict_unrestore

__all__ = [
    "filter_config_update",
    "filter_run_cancel",
    "filter_run_execute",
    "filter_run_start",
    "filters_queue",
    "filters_start_for_job",
    "verdict_restore",
    "verdict_unrestore",
]
