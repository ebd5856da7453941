"""Base models, training runs, their metric rows and artefacts.

Three kinds of run share the lifecycle (`distillapp.core.runs`), all on the `gpu` queue:
- `BaseModel` *is* its inspection run: queued → running → succeeded with `inspection` filled (or
  failed with an exact sentence in `message`); inspecting again re-queues it.
- `TrainingRun`: one student trained from a dataset version and a base model by sft or kd, in a
  child process the worker supervises (`runner.py`); `TrainingMetric` rows are its curve.
- `QuantizationRun`: torchao weight-only quantisation of a finished run's merged model.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from distillapp.core.runs.models import Run, RunStatus
from distillapp.datasets.models import DatasetVersion
from distillapp.generation.models import Teacher
from distillapp.projects.models import Project


class BaseModelSource(models.TextChoices):
    PATH = "path", "Local folder"
    HUB = "hub_id", "Hugging Face Hub id (from the cache)"


class Method(models.TextChoices):
    SFT = "sft", "Response distillation (sft)"
    KD = "kd", "Logit distillation (kd)"


class BaseModel(Run):
    """A student base model of a project, and the run that inspects it on a gpu worker."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="base_models")
    name = models.CharField(max_length=120)
    source = models.CharField(max_length=8, choices=BaseModelSource.choices)
    path = models.CharField(max_length=1000, blank=True, default="")
    hub_id = models.CharField(max_length=200, blank=True, default="")
    # The folder the worker loads: `path`, or the hub id's snapshot in MEDIA_ROOT/hf-cache.
    resolved_path = models.CharField(max_length=1000, blank=True, default="")
    # architecture, parameters, vocab_size, chat_template, context_length, dtype, size_bytes,
    # chars_per_token, teachers: {teacher id: {name, kd, reason}}.
    inspection = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="basemodel_unique_name")
        ]
        ordering = ["name"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="basemodel_status_heartbeat")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def location(self) -> str:
        return self.path if self.source == BaseModelSource.PATH else self.hub_id

    @property
    def is_ready(self) -> bool:
        return self.status == RunStatus.SUCCEEDED and bool(self.resolved_path)


class TrainingRun(Run):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="training_runs"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="runs")
    method = models.CharField(max_length=8, choices=Method.choices, default=Method.SFT)
    # The teacher whose tokenizer the kd vocabulary check uses (snapshot of its folder in config).
    teacher = models.ForeignKey(
        Teacher, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The TrainConfig settings people chose (defaults filled in); paths are added by the runner.
    config = models.JSONField(default=dict)
    # Steps and tokens computed at launch (selectors.training_preview).
    preview = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Relative to MEDIA_ROOT: orgs/<org>/training/<run id>.
    out_dir = models.CharField(max_length=500, blank=True, default="")
    # The engine's TrainResult (final losses, tokens/s, truncation report) once it ends.
    result = models.JSONField(default=dict, blank=True)
    log_tail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="trainrun_status_heartbeat")
        ]

    def __str__(self) -> str:
        return f"Training run {self.pk}"


class TrainingMetric(models.Model):
    """One logged step of a run; a resumed run overwrites, never repeats, a step."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metric_rows")
    step = models.PositiveIntegerField()
    epoch = models.FloatField(null=True, blank=True)
    train_loss = models.FloatField(null=True, blank=True)
    eval_loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    grad_norm = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "step"], name="trainingmetric_unique_step")
        ]
        ordering = ["step"]


class TrainingArtifact(models.Model):
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=40)  # adapter, merged, model, quantized-int8, ...
    path = models.CharField(max_length=500)  # folder relative to MEDIA_ROOT
    size_bytes = models.BigIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="trainingartifact_unique_name")
        ]
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.name


class QuantizationRun(Run):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    training_run = models.ForeignKey(
        TrainingRun, on_delete=models.CASCADE, related_name="quantizations"
    )
    scheme = models.CharField(max_length=8, default="int8")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="quantrun_status_heartbeat")
        ]
