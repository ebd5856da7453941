"""Tasks of eval runs: `teacher` when every model is an API teacher, `gpu` when any is local
(the run's kind decides: distillapp.evaluation.apps). Thin: take the id, call the driver."""

from __future__ import annotations

from workers.app import app


@app.task(
    name="workers.tasks.evaluation.run_eval",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 300,
)
def run_eval(run_id: int) -> str:
    """Run, resume or take over an eval run. Idempotent: the run's claim decides; answers and
    judgements are upserts on (run, model, item), so nothing finished is done twice."""
    from distillapp.evaluation.runner import eval_run_execute

    return eval_run_execute(run_id=run_id)
