"""Tasks of training (queue `gpu`). Thin: take the run's id, call the runner, which supervises
the engine in a child process."""

from __future__ import annotations

from workers.app import app

_LIMITS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}


@app.task(
    name="workers.tasks.training.inspect_base_model",
    soft_time_limit=1800,
    time_limit=1900,
    **_LIMITS,
)
def inspect_base_model(base_model_id: int) -> str | None:
    """Inspect a base model folder (or cached hub id). Idempotent: the run's claim lets one
    worker inspect; a finished inspection is not repeated."""
    from distillapp.training.runner import base_model_inspect_execute

    model = base_model_inspect_execute(base_model_id=base_model_id)
    return model.status if model is not None else None


@app.task(
    name="workers.tasks.training.run_training",
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 300,
    **_LIMITS,
)
def run_training(run_id: int) -> str | None:
    """Train or resume a run. Idempotent: one claim trains; a taken-over run continues from its
    latest checkpoint; metric rows are upserts on (run, step)."""
    from distillapp.training.runner import training_run_execute

    run = training_run_execute(run_id=run_id)
    return run.status if run is not None else None


@app.task(
    name="workers.tasks.training.run_quantization",
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
    **_LIMITS,
)
def run_quantization(quantization_id: int) -> str | None:
    """Quantise a run's merged model. Idempotent by its claim and the (run, name) artefact."""
    from distillapp.training.runner import quantization_execute

    q = quantization_execute(quantization_id=quantization_id)
    return q.status if q is not None else None
