"""Tasks of prompt sets (queue `default`). Thin: take the run's id, call the service."""

from __future__ import annotations

from workers.app import app


@app.task(
    name="workers.tasks.prompts.index_prompt_set_search",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def index_prompt_set_search(run_id: int) -> int | None:
    """Fill the full-text search vectors of an imported set (sent on the import's commit).

    Idempotent: the run's claim lets one worker work; each batch updates only prompts still
    without a vector, so a worker that takes over skips what is done.
    """
    from distillapp.prompts.services import search_index_run_execute

    run = search_index_run_execute(run_id=run_id)
    return run.done if run is not None else None
