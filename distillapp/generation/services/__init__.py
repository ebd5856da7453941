"""Writes of the generation app, by concern: teachers, jobs people start, and what a job's worker
writes. Callers import from here."""

from __future__ import annotations

from distillapp.generation.services.jobs import (
    generation_job_cancel,
    generation_job_resume,
    generation_job_retry_failed,
    generation_job_start,
)
from distillapp.generation.services.results import (
    Claim,
    ClaimLost,
    ClaimState,
    generation_job_claim,
    generation_job_fail,
    generation_job_finish,
    generation_job_heartbeat,
    generation_job_set_fingerprint,
    generation_job_write_results,
)
from distillapp.generation.services.teachers import (
    DEVICES,
    DTYPES,
    teacher_api_key,
    teacher_create,
    teacher_delete,
    teacher_rotate_key,
    teacher_snapshot,
    teacher_update,
)

__all__ = [
    "DEVICES",
    "DTYPES",
    "Claim",
    "ClaimLost",
    "ClaimState",
    "generation_job_cancel",
    "generation_job_claim",
    "generation_job_fail",
    "generation_job_finish",
    "generation_job_heartbeat",
    "generation_job_resume",
    "generation_job_retry_failed",
    "generation_job_set_fingerprint",
    "generation_job_start",
    "generation_job_write_results",
    "teacher_api_key",
    "teacher_create",
    "teacher_delete",
    "teacher_rotate_key",
    "teacher_snapshot",
    "teacher_update",
]
