from __future__ import annotations

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "distillapp.training"
    label = "training"

    def ready(self) -> None:
        from distillapp.core.queues import Queue
        from distillapp.core.runs.registry import RunKind, register
        from distillapp.training.models import BaseModel, QuantizationRun, TrainingRun

        for name, model, task in (
            ("base_model_inspection", BaseModel, "workers.tasks.training.inspect_base_model"),
            ("training", TrainingRun, "workers.tasks.training.run_training"),
            ("quantization", QuantizationRun, "workers.tasks.training.run_quantization"),
        ):
            register(RunKind(name=name, model=model, task=task, queue=lambda run: Queue.GPU))
