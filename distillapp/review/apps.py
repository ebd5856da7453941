from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "distillapp.review"
    label = "review"

    def ready(self) -> None:
        from distillapp.prompts.services.sets import after_prompt_set_delete
        from distillapp.review.services.tally import tally_rebuild

        # Items deleted with their prompts bypass the review services: recount at once, so the
        # progress tally is exact after the delete, not only after the next forced sync.
        def recount(project: Any) -> None:
            tally_rebuild(project=project)

        after_prompt_set_delete(recount)
