"""The run lifecycle: one set of writes for every kind of background run.

queued ──claim──▶ running ──end──▶ succeeded | failed | cancelled
   │                 │ cancel
   └─cancel─▶ cancelled      cancelling ──(worker sees it)──▶ cancelled
failed | cancelled ──resume──▶ queued

Every change is a conditional UPDATE on the run's status and, while a worker owns it, on its
`claim_token`: a task delivered twice, a worker that was only paused and lost its claim, or two
people clicking at once cannot double anything. A worker proves it is alive by its heartbeat; the
sweep (`runs_sweep`, run by Celery beat) re-sends the task of a run whose heartbeat is older than
`RUN_STALE_SECONDS`, and the next claim takes the run over.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone

from distillapp.core import dispatch
from distillapp.core.runs.models import CLAIMED_STATUSES, Run, RunStatus
from distillapp.core.runs.registry import kind_of, kinds

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=Run)


class ClaimState(StrEnum):
    CLAIMED = "claimed"
    BUSY = "busy"  # another live worker runs it
    ENDED = "ended"  # nothing to do (finished, cancelled, or gone)


@dataclass
class Claim(Generic[R]):
    state: ClaimState
    run: R | None = None
    token: str = ""


class ClaimLost(Exception):
    """This worker run no longer owns the run; it must stop without writing."""


class RunCancelled(Exception):
    """Someone asked the run to stop (status `cancelling`): its worker ends it cancelled."""


def new_claim_token() -> str:
    return f"{uuid.uuid4().hex[:16]}{secrets.token_hex(8)}"


def _stale_before(stale_after: float | None = None) -> datetime:
    seconds = settings.RUN_STALE_SECONDS if stale_after is None else stale_after
    return timezone.now() - timedelta(seconds=seconds)


def _stale(stale_after: float | None = None) -> Q:
    return Q(heartbeat_at__lt=_stale_before(stale_after)) | Q(heartbeat_at__isnull=True)


def run_is_stale(run: Run) -> bool:
    """A claimed run whose worker stopped heart-beating (killed, host lost, or paused too long)."""
    return run.status in CLAIMED_STATUSES and (
        run.heartbeat_at is None or run.heartbeat_at < _stale_before()
    )


def run_enqueue(run: Run) -> None:
    """Send the run's task on its queue after commit, and note when."""
    kind = kind_of(run)
    type(run)._default_manager.filter(pk=run.pk).update(enqueued_at=timezone.now())
    dispatch.enqueue(kind.task, run.pk, queue=kind.queue(run))


def run_claim(
    model: type[R], *, pk: int, stale_after: float | None = None, **on_claim: Any
) -> Claim[R]:
    """Take a run for this worker: queued → running, or take over a running run whose worker
    stopped heart-beating. A cancelling run with a dead worker becomes cancelled.

    `on_claim` fields are written in the same statement (e.g. when this run's throughput starts).
    Idempotent: of two deliveries of the same task only one claims; the other gets BUSY or ENDED.
    """
    now = timezone.now()
    token = new_claim_token()
    base = model._default_manager.filter(pk=pk)
    fields = {"claim_token": token, "heartbeat_at": now, **on_claim}
    claimed = base.filter(status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, **fields
    ) or base.filter(Q(status=RunStatus.RUNNING) & _stale(stale_after)).update(**fields)
    if claimed:
        base.filter(claim_token=token, started_at__isnull=True).update(started_at=now)
        return Claim(ClaimState.CLAIMED, base.get(), token)
    base.filter(Q(status=RunStatus.CANCELLING) & _stale(stale_after)).update(
        status=RunStatus.CANCELLED, finished_at=now, claim_token="", message="Cancelled."
    )
    current = base.first()
    if current is not None and current.status in CLAIMED_STATUSES:
        return Claim(ClaimState.BUSY, current)
    return Claim(ClaimState.ENDED, current)


def run_heartbeat(model: type[Run], *, pk: int, token: str, **progress: Any) -> str:
    """Prove the run is alive (and write progress fields with it). Returns its status: a worker
    that reads `cancelling` stops. Raises ClaimLost when another worker took the run over."""
    if not model._default_manager.filter(pk=pk, claim_token=token).update(
        heartbeat_at=timezone.now(), **progress
    ):
        raise ClaimLost(pk)
    return model._default_manager.filter(pk=pk).values_list("status", flat=True).get()


def run_progress(model: type[Run], *, pk: int, token: str, **progress: Any) -> None:
    """`run_heartbeat` for workers that stop by exception: raises RunCancelled when the run was
    asked to cancel (and ClaimLost when another worker took it over)."""
    if run_heartbeat(model, pk=pk, token=token, **progress) == RunStatus.CANCELLING:
        raise RunCancelled(pk)


def run_claimed(model: type[R], *, pk: int, work: Callable[[R, str], None], what: str) -> R | None:
    """Claim run `pk` and call `work(run, token)`. A lost claim stops quietly; any other error
    fails the run with its message (resumable). Returns the run as it is afterwards, or what the
    claim found when it got none (None when the run is gone). Idempotent by the claim."""
    claim = run_claim(model, pk=pk)
    if claim.state != ClaimState.CLAIMED or claim.run is None:
        return claim.run
    run, token = claim.run, claim.token
    try:
        work(run, token)
    except ClaimLost:
        logger.info("%s %s: claim lost; another worker owns it", what, pk)
    except Exception as exc:
        logger.exception("%s %s crashed", what, pk)
        run_fail(model, pk=pk, token=token, message=f"The worker failed: {exc}")
    run.refresh_from_db()
    return run


def run_end(
    model: type[Run], *, pk: int, token: str, status: RunStatus, message: str = "", **fields: Any
) -> None:
    """End this worker's run with `status`; a run that was asked to cancel ends cancelled unless
    it failed. Raises ClaimLost (writing nothing) when this worker no longer owns the run."""
    now = timezone.now()
    base = model._default_manager.filter(pk=pk, claim_token=token)
    if status == RunStatus.SUCCEEDED and base.filter(status=RunStatus.CANCELLING).exists():
        status = RunStatus.CANCELLED
    if not base.update(
        status=status,
        message=message[:4000],
        finished_at=now,
        heartbeat_at=now,
        claim_token="",
        **fields,
    ):
        raise ClaimLost(pk)


def run_fail(model: type[Run], *, pk: int, token: str, message: str) -> None:
    """A worker crashed on something other than the work itself (a bug, the database). The run
    can be resumed from what it wrote. Does nothing when the worker no longer owns the run."""
    try:
        run_end(model, pk=pk, token=token, status=RunStatus.FAILED, message=message)
    except ClaimLost:
        logger.info("%s %s: lost its claim before it could record a failure", model.__name__, pk)


def run_cancel(run: R) -> R:
    """Queued → cancelled; running → cancelling (its worker stops within seconds and keeps its
    work); a running run whose worker is gone (stale heartbeat) is cancelled at once."""
    model = type(run)
    now = timezone.now()
    ended = {
        "status": RunStatus.CANCELLED,
        "finished_at": now,
        "claim_token": "",
        "message": "Cancelled.",
    }
    base = model._default_manager.filter(pk=run.pk)
    updated = (
        base.filter(status=RunStatus.QUEUED).update(**ended)
        or base.filter(Q(status__in=CLAIMED_STATUSES) & _stale()).update(**ended)
        or base.filter(status=RunStatus.RUNNING).update(status=RunStatus.CANCELLING)
    )
    run.refresh_from_db()
    if not updated:
        raise ValidationError(f"A {run.get_status_display().lower()} run cannot be cancelled.")  # type: ignore[attr-defined]
    return run


def run_requeue(run: R, *, from_statuses: tuple[str, ...], refusal: str, **fields: Any) -> R:
    """Put an ended run back in the queue (resume, retry) and send its task. The next claim picks
    up from what earlier runs wrote; `fields` are reset in the same statement."""
    updated = (
        type(run)
        ._default_manager.filter(pk=run.pk, status__in=from_statuses)
        .update(status=RunStatus.QUEUED, claim_token="", finished_at=None, message="", **fields)
    )
    run.refresh_from_db()
    if not updated:
        raise ValidationError(refusal)
    run_enqueue(run)
    return run


def run_resume(run: R, **fields: Any) -> R:
    """Cancelled or failed → queued; a running run whose worker died is re-sent as it is (the next
    worker takes it over). Either way only what is missing is done again."""
    if run_is_stale(run):
        run_enqueue(run)
        return run
    return run_requeue(
        run,
        from_statuses=(RunStatus.CANCELLED, RunStatus.FAILED),
        refusal="Only a cancelled or failed run can be resumed.",
        **fields,
    )


def runs_sweep(*, stale_after: float | None = None) -> list[tuple[str, int]]:
    """Re-send the task of every claimed run whose heartbeat is stale (its worker was killed, its
    host lost). Run by Celery beat every `RUN_SWEEP_SECONDS`; safe anywhere, any number of times:
    the claim decides who runs, and a run is re-sent at most once per stale period."""
    stale_before = _stale_before(stale_after)
    sent: list[tuple[str, int]] = []
    for kind in kinds():
        stale = kind.model._default_manager.filter(
            Q(status__in=CLAIMED_STATUSES) & _stale(stale_after)
        )
        stale = stale.filter(Q(enqueued_at__lt=stale_before) | Q(enqueued_at__isnull=True))
        for run in stale.order_by("pk"):
            run_enqueue(run)
            sent.append((kind.name, run.pk))
    if sent:
        logger.info("re-sent stale runs: %s", sent)
    return sent
