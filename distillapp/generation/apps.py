from __future__ import annotations

from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "distillapp.generation"
    label = "generation"

    def ready(self) -> None:
        from distillapp.core.queues import Queue
        from distillapp.core.runs.registry import RunKind, register
        from distillapp.generation.models import GenerationJob, TeacherKind

        def queue(job: GenerationJob) -> Queue:  # type: ignore[override]
            local = (job.teacher_snapshot or {}).get("kind") == TeacherKind.HF_LOCAL
            return Queue.GPU if local else Queue.TEACHER

        register(
            RunKind(
                name="generation",
                model=GenerationJob,
                task="workers.tasks.generation.run_generation_job",
                queue=queue,  # type: ignore[arg-type]
            )
        )
