"""Tasks of prompt sets (queue `default`). Thin: re-fetch by id, call a service."""

from __future__ import annotations

import logging

from workers.app import app

logger = logging.getLogger(__name__)


@app.task(
    name="workers.tasks.prompts.index_prompt_set_search",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def index_prompt_set_search(prompt_set_id: int) -> int | None:
    """Fill the full-text search vectors of an imported set (enqueued on the import's commit).

    Idempotent: each batch updates only prompts still without a vector, so a re-delivery or a
    second worker skips what is done; an already indexed or deleted set is a no-op.
    """
    from distillapp.prompts.models import PromptSet
    from distillapp.prompts.services import prompt_set_index_search

    prompt_set = PromptSet.objects.filter(pk=prompt_set_id).first()
    if prompt_set is None:
        logger.info("index_prompt_set_search: prompt set %s no longer exists", prompt_set_id)
        return None
    if prompt_set.search_indexed:
        return 0
    return prompt_set_index_search(prompt_set=prompt_set)
