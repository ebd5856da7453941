from __future__ import annotations

from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "distillapp.datasets"
    label = "datasets"

    def ready(self) -> None:
        from distillapp.core.queues import Queue
        from distillapp.core.runs.registry import RunKind, register
        from distillapp.datasets.models import DatasetVersion

        register(
            RunKind(
                name="dataset_build",
                model=DatasetVersion,
                task="workers.tasks.datasets.build_dataset_version",
                queue=lambda run: Queue.DEFAULT,
            )
        )
