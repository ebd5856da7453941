"""The run lifecycle every background job shares (distillapp.core.runs), on a concrete kind."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from distillapp.core import dispatch
from distillapp.core.queues import Queue
from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.registry import kind_of, kinds
from distillapp.core.runs.services import (
    ClaimLost,
    ClaimState,
    run_cancel,
    run_claim,
    run_end,
    run_enqueue,
    run_heartbeat,
    run_is_stale,
    run_resume,
    runs_sweep,
)
from distillapp.filters.models import FilterRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(project, sent_tasks):
    created = FilterRun.objects.create(project=project)
    run_enqueue(created)
    return created


def _age(run, **fields_hours_ago) -> None:
    past = timezone.now() - timedelta(hours=1)
    FilterRun.objects.filter(pk=run.pk).update(**dict.fromkeys(fields_hours_ago, past))


def test_every_background_kind_is_registered_with_its_task():
    names = {kind.name: kind for kind in kinds()}
    assert {"generation", "filters", "search_index"} <= set(names)
    assert kind_of(FilterRun).task == "workers.tasks.filters.execute_filter_run"


def test_enqueue_sends_the_task_by_name_on_its_queue(run, sent_tasks):
    assert [(s.name, s.args, s.queue) for s in sent_tasks] == [
        ("workers.tasks.filters.execute_filter_run", (run.pk,), Queue.DEFAULT.value)
    ]
    run.refresh_from_db()
    assert run.enqueued_at is not None


def test_the_real_enqueue_sends_only_after_commit(monkeypatch, django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(dispatch, "send_task", lambda name, *a, queue: sent.append((name, a)))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        dispatch.enqueue("workers.tasks.maintenance.ping", queue=Queue.DEFAULT)
    assert sent == [] and len(callbacks) == 1
    callbacks[0]()
    assert sent == [("workers.tasks.maintenance.ping", ())]


def test_one_delivery_claims_the_second_is_told_busy(run):
    first = run_claim(FilterRun, pk=run.pk)
    second = run_claim(FilterRun, pk=run.pk)
    assert first.state == ClaimState.CLAIMED and first.run.status == RunStatus.RUNNING
    assert first.run.started_at is not None
    assert second.state == ClaimState.BUSY
    assert run_claim(FilterRun, pk=10**9).state == ClaimState.ENDED


def test_a_stale_run_is_taken_over_and_the_old_worker_can_no_longer_write(run):
    old = run_claim(FilterRun, pk=run.pk)
    _age(run, heartbeat_at=True)
    run.refresh_from_db()
    assert run_is_stale(run)
    new = run_claim(FilterRun, pk=run.pk)
    assert new.state == ClaimState.CLAIMED and new.token != old.token
    with pytest.raises(ClaimLost):
        run_heartbeat(FilterRun, pk=run.pk, token=old.token, done=5)
    with pytest.raises(ClaimLost):
        run_end(FilterRun, pk=run.pk, token=old.token, status=RunStatus.SUCCEEDED)
    assert run_heartbeat(FilterRun, pk=run.pk, token=new.token, done=5) == RunStatus.RUNNING
    assert FilterRun.objects.get(pk=run.pk).done == 5


def test_cancel_queued_ends_it_running_asks_the_worker_and_a_dead_worker_ends_it(project):
    queued = FilterRun.objects.create(project=project)
    assert run_cancel(queued).status == RunStatus.CANCELLED

    running = FilterRun.objects.create(project=project)
    claim = run_claim(FilterRun, pk=running.pk)
    assert run_cancel(running).status == RunStatus.CANCELLING
    assert run_heartbeat(FilterRun, pk=running.pk, token=claim.token) == RunStatus.CANCELLING
    run_end(FilterRun, pk=running.pk, token=claim.token, status=RunStatus.SUCCEEDED)
    running.refresh_from_db()
    assert running.status == RunStatus.CANCELLED  # asked to cancel: it never reads as succeeded

    orphan = FilterRun.objects.create(project=project)
    run_claim(FilterRun, pk=orphan.pk)
    _age(orphan, heartbeat_at=True)
    assert run_cancel(orphan).status == RunStatus.CANCELLED
    with pytest.raises(ValidationError):
        run_cancel(orphan)


def test_resume_requeues_ended_runs_and_resends_stale_ones(run, sent_tasks):
    claim = run_claim(FilterRun, pk=run.pk)
    with pytest.raises(ValidationError):
        run_resume(run)  # its worker is alive
    run_end(FilterRun, pk=run.pk, token=claim.token, status=RunStatus.FAILED, message="boom")
    run.refresh_from_db()
    assert run_resume(run).status == RunStatus.QUEUED and len(sent_tasks) == 2
    run_claim(FilterRun, pk=run.pk)
    _age(run, heartbeat_at=True)
    run.refresh_from_db()
    assert run_resume(run).status == RunStatus.RUNNING and len(sent_tasks) == 3


def test_the_sweep_resends_stale_runs_once_per_period_and_ignores_live_ones(project, sent_tasks):
    live = FilterRun.objects.create(project=project)
    dead = FilterRun.objects.create(project=project)
    queued = FilterRun.objects.create(project=project)
    for r in (live, dead):
        run_claim(FilterRun, pk=r.pk)
    _age(dead, heartbeat_at=True, enqueued_at=True)
    assert runs_sweep() == [("filters", dead.pk)]
    assert [s.args for s in sent_tasks] == [(dead.pk,)]
    assert runs_sweep() == []  # re-sent already; waits a stale period before the next try
    assert FilterRun.objects.get(pk=queued.pk).status == RunStatus.QUEUED


def test_a_cancelling_run_whose_worker_died_becomes_cancelled_at_the_next_claim(run):
    run_claim(FilterRun, pk=run.pk)
    run_cancel(run)
    _age(run, heartbeat_at=True)
    assert run_claim(FilterRun, pk=run.pk).state == ClaimState.ENDED
    assert FilterRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_progress_raises_run_cancelled_once_someone_asked_the_run_to_stop(run):
    from distillapp.core.runs.services import RunCancelled, run_progress

    claim = run_claim(FilterRun, pk=run.pk)
    run_progress(FilterRun, pk=run.pk, token=claim.token, done=3)
    run_cancel(run)
    with pytest.raises(RunCancelled):
        run_progress(FilterRun, pk=run.pk, token=claim.token, done=4)
    assert FilterRun.objects.get(pk=run.pk).done == 4


def test_run_claimed_works_once_and_fails_a_crashed_run_with_its_reason(project):
    from distillapp.core.runs.services import run_claimed

    calls = []

    def crash(run, token):
        calls.append(token)
        raise RuntimeError("disk full")

    crashing = FilterRun.objects.create(project=project)
    ended = run_claimed(FilterRun, pk=crashing.pk, work=crash, what="test run")
    assert ended.status == RunStatus.FAILED and "disk full" in ended.message
    assert ended.claim_token == "" and len(calls) == 1
    assert run_claimed(FilterRun, pk=crashing.pk, work=crash, what="test run").pk == crashing.pk
    assert len(calls) == 1  # an ended run is never claimed again
    assert run_claimed(FilterRun, pk=10**9, work=crash, what="test run") is None
