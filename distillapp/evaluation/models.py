"""Eval sets and their items: eval-only by construction.

Eval items live in their own table, never in `prompts_prompt`: generation jobs read prompt sets
and dataset builds read completions of train-split prompts, so neither can select an eval item
(tests/evaluation/test_eval_only.py tries). `EvalSet.eval_only` is always true (a check
constraint) so the guarantee is visible in the data too.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from distillapp.core.runs.models import Run
from distillapp.projects.models import Project
from distillapp.prompts.models import chat_messages


class EvalSetKind(models.TextChoices):
    HELDOUT = "heldout", "Held-out prompts"
    UPLOADED = "uploaded", "Uploaded"
    CAPABILITY = "capability", "Capability suite"
    SAFETY = "safety", "Safety suite"


class EvalSet(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="eval_sets")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=EvalSetKind.choices)
    source_name = models.CharField(max_length=255, blank=True, default="")
    source_format = models.CharField(max_length=16, blank=True, default="")
    # Of the uploaded file or shipped suite; for a held-out set, of its items' canonical JSON.
    sha256 = models.CharField(max_length=64, blank=True, default="")
    item_count = models.IntegerField(default=0)
    reference_count = models.IntegerField(default=0)
    must_refuse_count = models.IntegerField(default=0)
    categories = models.JSONField(default=dict, blank=True)  # category -> item count
    eval_only = models.BooleanField(default=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(eval_only=True), name="eval_set_eval_only")
        ]

    def __str__(self) -> str:
        return self.name


class EvalItem(models.Model):
    eval_set = models.ForeignKey(EvalSet, on_delete=models.CASCADE, related_name="items")
    # The set's project, repeated so access checks (get_scoped_object) need no join.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    position = models.IntegerField()
    external_id = models.CharField(max_length=255, blank=True, default="")
    # None when the prompt is one user message (its content is `text`), as Prompt stores it.
    messages = models.JSONField(null=True, blank=True)
    text = models.TextField()
    reference = models.TextField(null=True, blank=True)
    category = models.CharField(max_length=100, blank=True, default="")
    must_refuse = models.BooleanField(null=True, blank=True)  # safety items only
    # A held-out item's prompt (no foreign key: prompts are deleted in bulk by their own app).
    source_prompt_id = models.BigIntegerField(null=True, blank=True)
    # A reference counts as verified only once a human approved it (these two are then set).
    reference_verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    reference_verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["eval_set", "id"]
        indexes = [models.Index(fields=["eval_set", "id"], name="eval_item_set_keyset")]
        constraints = [
            models.UniqueConstraint(fields=["eval_set", "position"], name="eval_item_position")
        ]

    @property
    def chat(self) -> list[dict[str, str]]:
        return chat_messages(self.messages, self.text)

    @property
    def reference_verified(self) -> bool:
        return self.reference_verified_at is not None and bool(self.reference)


class EvalRun(Run):
    """One evaluation: models × eval sets, answered, judged and scored (the run lifecycle).

    `model_specs` is a frozen list of what each model was when the run was made (kind, paths, prices,
    decoding), so later edits of teachers, base models or training runs leave it as it was.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="eval_runs")
    name = models.CharField(max_length=200, blank=True, default="")
    eval_sets = models.ManyToManyField(EvalSet, related_name="runs")
    # [{key, label, role (teacher|base|student), kind (api|local), ...snapshot}]
    model_specs = models.JSONField(default=list)
    # Decoding shared by every model unless its entry has its own `decoding`.
    decoding = models.JSONField(default=dict, blank=True)
    # The model every other one is judged against (a teacher's key), and the judge's snapshot.
    baseline_key = models.CharField(max_length=100, blank=True, default="")
    judge = models.JSONField(default=dict, blank=True)
    # Eval sets' names and hashes, dataset versions, training runs, base models: for the report.
    lineage = models.JSONField(default=dict, blank=True)
    stage = models.CharField(max_length=16, blank=True, default="")  # answer | judge | score
    results = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="evalrun_status_heartbeat")]

    def __str__(self) -> str:
        return self.name or f"Eval run {self.pk}"

    @property
    def uses_gpu(self) -> bool:
        return any(m.get("kind") == "local" for m in self.model_specs)


class EvalAnswer(models.Model):
    """A model's answer to an eval item: eval-only, never a Completion, so no dataset build,
    review queue or generation job can ever see it. Upserted on (run, model, item)."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="answers")
    model_key = models.CharField(max_length=100)
    item = models.ForeignKey(EvalItem, on_delete=models.CASCADE, related_name="+")
    ok = models.BooleanField(default=True)
    text = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    prompt_tokens = models.IntegerField(default=0)
    completion_tokens = models.IntegerField(default=0)
    latency_ms = models.IntegerField(default=0)
    # Local models: how many prompts shared the forward passes, and that batch's wall time.
    batch_size = models.IntegerField(default=1)
    batch_ms = models.IntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "model_key", "item"], name="evalanswer_unique_run_model_item"
            )
        ]
        indexes = [models.Index(fields=["run", "item"], name="evalanswer_run_item")]


class EvalJudgement(models.Model):
    """The pairwise judge on one item: a model's answer against the baseline's, in both orders.
    `outcome` is 1 / 0.5 / 0 for the candidate, null when an order has no verdict."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="judgements")
    model_key = models.CharField(max_length=100)
    item = models.ForeignKey(EvalItem, on_delete=models.CASCADE, related_name="+")
    candidate_first = models.CharField(max_length=8, blank=True, default="")  # first|second|tie
    baseline_first = models.CharField(max_length=8, blank=True, default="")
    rationale_candidate_first = models.TextField(blank=True, default="")
    rationale_baseline_first = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    outcome = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "model_key", "item"], name="evaljudgement_unique_run_model_item"
            )
        ]


class HumanPreference(models.TextChoices):
    CANDIDATE = "candidate", "Candidate better"
    TIE = "tie", "Tie"
    BASELINE = "baseline", "Baseline better"


class EvalHumanVerdict(models.Model):
    """A reviewer's own pairwise verdict on one item: a model's answer against the baseline's.
    Compared with the judge's outcome on the same pair, it says how far to trust the judge."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="human_verdicts")
    model_key = models.CharField(max_length=100)
    item = models.ForeignKey(EvalItem, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    preferred = models.CharField(max_length=10, choices=HumanPreference.choices)
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "model_key", "item", "user"],
                name="evalhumanverdict_unique_run_model_item_user",
            )
        ]
