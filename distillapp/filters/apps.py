from __future__ import annotations

from django.apps import AppConfig


class FiltersConfig(AppConfig):
    name = "distillapp.filters"
    label = "filters"

    def ready(self) -> None:
        from distillapp.core.runs.models import Run
        from distillapp.core.runs.registry import RunKind, on_succeeded, register
        from distillapp.filters.models import FilterRun
        from distillapp.filters.services import filters_queue, filters_start_for_job

        register(
            RunKind(
                name="filters",
                model=FilterRun,
                task="workers.tasks.filters.execute_filter_run",
                queue=lambda run: filters_queue(run.project),  # type: ignore[attr-defined]
            )
        )

        def filter_finished_job(job: Run) -> None:
            # Every generation job that ends with completions gets its automatic filter run.
            filters_start_for_job(job=job)

        on_succeeded("generation", filter_finished_job)
