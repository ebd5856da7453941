from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from distillapp.core.runs.models import ACTIVE_STATUSES as RUN_ACTIVE_STATUSES
from distillapp.core.runs.models import ENDED_STATUSES as RUN_ENDED_STATUSES
from distillapp.core.runs.models import Run, RunStatus
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt, PromptSet


class TeacherKind(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible API"
    HF_LOCAL = "hf_local", "Local transformers model"


class Teacher(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="teachers")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=TeacherKind.choices)
    # openai
    base_url = models.CharField(max_length=500, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    api_key_encrypted = models.TextField(blank=True, default="")
    api_key_last4 = models.CharField(max_length=4, blank=True, default="")
    concurrency = models.PositiveIntegerField(default=16)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    price_input_per_m = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    price_output_per_m = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    # hf_local
    model_path = models.CharField(max_length=1000, blank=True, default="")
    device = models.CharField(max_length=8, default="auto")
    dtype = models.CharField(max_length=16, default="auto")
    batch_size = models.PositiveIntegerField(default=16)
    # system_prompt, temperature, top_p, max_tokens, stop, seed, n, top_logprobs
    decoding = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="teacher_unique_name")
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# One status vocabulary for every run (distillapp.core.runs); the old names stay for readability.
JobStatus = RunStatus
ACTIVE_STATUSES = RUN_ACTIVE_STATUSES
ENDED_STATUSES = RUN_ENDED_STATUSES


class GenerationJob(Run):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="generation_jobs")
    prompt_set = models.ForeignKey(
        PromptSet, on_delete=models.CASCADE, related_name="generation_jobs"
    )
    teacher = models.ForeignKey(
        Teacher, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs"
    )
    # Frozen copy of the teacher and decoding settings the job runs with; never rewritten.
    teacher_snapshot = models.JSONField(default=dict)
    samples_per_prompt = models.PositiveIntegerField(default=1)
    prompt_filter = models.JSONField(default=dict, blank=True)
    failed = models.IntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal(0))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    # "Retry failed items": the next run also regenerates failed completions.
    retry_failed = models.BooleanField(default=False)
    # Throughput and ETA of the current run: items finished when it started, and when.
    run_started_at = models.DateTimeField(null=True, blank=True)
    run_start_count = models.IntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="genjob_status_heartbeat")]

    def __str__(self) -> str:
        return f"Generation job {self.pk}"

    @property
    def finished_count(self) -> int:
        return self.done + self.failed


class CompletionStatus(models.TextChoices):
    OK = "ok", "OK"
    FAILED = "failed", "Failed"


class Completion(models.Model):
    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="completions")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="completions")
    sample_index = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=8, choices=CompletionStatus.choices, default=CompletionStatus.OK
    )
    text = models.TextField(blank=True, default="")
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    prompt_tokens = models.IntegerField(default=0)
    completion_tokens = models.IntegerField(default=0)
    latency_ms = models.IntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    # Top-k log-probs in the binary format of workers.engine.topk_format (not a JSON list).
    topk = models.BinaryField(null=True, blank=True)
    mean_logprob = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "prompt", "sample_index"], name="completion_unique_job_prompt_sample"
            )
        ]
        indexes = [models.Index(fields=["job", "status", "id"], name="completion_job_status_id")]
