from __future__ import annotations

from django.apps import AppConfig


class PromptsConfig(AppConfig):
    name = "distillapp.prompts"
    label = "prompts"

    def ready(self) -> None:
        from distillapp.core.queues import Queue
        from distillapp.core.runs.registry import RunKind, register
        from distillapp.projects.services import before_project_delete
        from distillapp.prompts.models import SearchIndexRun
        from distillapp.prompts.services import prompt_sets_delete_for_project

        before_project_delete(lambda project: prompt_sets_delete_for_project(project=project))
        register(
            RunKind(
                name="search_index",
                model=SearchIndexRun,
                task="workers.tasks.prompts.index_prompt_set_search",
                queue=lambda run: Queue.DEFAULT,
            )
        )
