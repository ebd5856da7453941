"""Tasks of datasets (queue `default`). Thin: take the version's id, call the service."""

from __future__ import annotations

from workers.app import app


@app.task(
    name="workers.tasks.datasets.build_dataset_version",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 300,
)
def build_dataset_version(version_id: int) -> str | None:
    """Build a dataset version's files from its recipe.

    Idempotent: the run's claim lets one worker build; files are written under a temporary name
    and renamed at the end, so a worker that takes over a killed build starts again from nothing
    visible, and a version that has succeeded is never built again.
    """
    from distillapp.datasets.build import dataset_version_execute

    version = dataset_version_execute(version_id=version_id)
    return version.status if version is not None else None
