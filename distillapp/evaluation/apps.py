from __future__ import annotations

from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "distillapp.evaluation"
    label = "evaluation"

    def ready(self) -> None:
        from distillapp.core.queues import Queue
        from distillapp.core.runs.registry import RunKind, register
        from distillapp.evaluation.models import EvalRun

        def queue(run: EvalRun) -> Queue:  # type: ignore[override]
            return Queue.GPU if run.uses_gpu else Queue.TEACHER

        register(
            RunKind(
                name="evaluation",
                model=EvalRun,
                task="workers.tasks.evaluation.run_eval",
                queue=queue,  # type: ignore[arg-type]
            )
        )
