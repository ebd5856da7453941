"""Training in Chromium: launch a tiny sft run from the form, watch the loss chart fill in, stop it,
resume it, see it finish and download the adapter.

The run's task (`workers.tasks.training.run_training`) executes in a worker thread of this
process, called as a worker would call it, and supervises the real engine child process. To stop
the run mid-way without a race, the thread pauses the child (SIGSTOP) once step 3 is stored and
lets it go on only after the Stop button has marked the run `cancelling`, as a slow step would.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import zipfile
from pathlib import Path

import pytest
from django.db import connection

from distillapp.core.runs.models import RunStatus
from distillapp.training import runner
from distillapp.training.models import TrainingMetric, TrainingRun
from tests.training import conftest as training_conftest
from workers.tasks.training import run_training

# The training tests' fixtures: a built dataset version, a tiny base model (character tokenizer).
media = training_conftest.media
tiny_base = training_conftest.tiny_base
version = training_conftest.version
base_model = training_conftest.base_model

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STEPS = 24
PAUSE_AT = 3


class Worker(threading.Thread):
    """Runs each `run_training` task the app enqueues, in order, until told to stop."""

    def __init__(self, sent_tasks: list) -> None:
        super().__init__(daemon=True)
        self.sent = sent_tasks
        self.done = 0
        self.errors: list[BaseException] = []
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                pending = [t for t in self.sent if t.name == "workers.tasks.training.run_training"]
                if len(pending) > self.done:
                    run_training(*pending[self.done].args)
                    self.done += 1
                else:
                    self.halt.wait(0.1)
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            self.errors.append(exc)
        finally:
            connection.close()


@pytest.fixture
def paused_child_until_stop(monkeypatch):
    """Freeze the engine child once step PAUSE_AT is stored; thaw it after Stop was pressed."""
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.0)
    children: list[runner.Child] = []
    original_init = runner.Child.__init__
    original_on_row = runner._Supervisor.on_row
    paused: list[int] = []

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        children.append(self)

    def on_row(self, row):
        original_on_row(self, row)
        if row["step"] != PAUSE_AT or paused:
            return
        paused.append(row["step"])
        pid = children[-1].proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = TrainingRun.objects.values_list("status", flat=True).get(pk=self.run.pk)
                if status == RunStatus.CANCELLING:
                    # What the supervisor does at its next heartbeat, done before the child
                    # runs another step.
                    (runner.run_folder(self.run) / runner.STOP_FILE).touch()
                    break
                time.sleep(0.1)
        finally:
            os.kill(pid, signal.SIGCONT)

    monkeypatch.setattr(runner.Child, "__init__", init)
    monkeypatch.setattr(runner._Supervisor, "on_row", on_row)
    return paused


ROOT = Path(__file__).resolve().parents[2]
CHART_PAGE = """<!doctype html><html><head>
<link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css"></head><body>
<div id="progress" data-active="true"></div>
<div data-loss-chart data-metrics-url="/api/v1/training-runs/7/metrics"
     data-active-source="#progress" data-interval="1000"></div>
<script src="/static/vendor/uplot/uPlot.iife.min.js" defer></script>
<script src="/static/js/loss_chart.js" defer></script></body></html>"""


def test_the_loss_chart_asks_only_for_new_steps_and_stops_after_the_run_ends(browser):
    """static/js/loss_chart.js alone, against a stand-in metrics endpoint."""
    rows = [{"step": 1, "train_loss": 2.0, "eval_loss": None}]
    asked: list[str] = []

    def metrics(route):
        since = int(route.request.url.partition("since_step=")[2] or -1)
        asked.append(route.request.url.rpartition("/")[2])
        body = [r for r in rows if r["step"] > since]
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    context = browser.new_context()
    page = context.new_page()
    page.route("http://chart.test/", lambda r: r.fulfill(content_type="text/html", body=CHART_PAGE))
    page.route(
        "http://chart.test/static/**",
        lambda r: r.fulfill(path=str(ROOT / r.request.url.split("http://chart.test/", 1)[1])),
    )
    page.route("http://chart.test/api/v1/training-runs/7/metrics*", metrics)
    try:
        page.goto("http://chart.test/")
        page.wait_for_selector("[data-loss-chart] canvas")
        assert _points(page) == 1
        rows.extend({"step": s, "train_loss": 2.0 / s, "eval_loss": 1.5} for s in (2, 3))
        page.wait_for_function(
            "() => document.querySelector('[data-loss-chart]').dataset.points === '3'"
        )
        assert "metrics?since_step=1" in asked
        # The page's polled partial says the run ended: one last fetch, then no more.
        rows.append({"step": 4, "train_loss": 0.4, "eval_loss": None})
        page.evaluate("() => { document.querySelector('#progress').dataset.active = 'false'; }")
        page.wait_for_function(
            "() => document.querySelector('[data-loss-chart]').dataset.finished === 'true'"
        )
        assert _points(page) == 4
        count = len(asked)
        page.wait_for_timeout(2500)  # more than two polling intervals
        assert len(asked) == count
        legend = page.inner_text("[data-loss-chart] .u-legend")
        assert "train loss" in legend and "eval loss" in legend
    finally:
        context.close()


def _points(page) -> int:
    return int(page.get_attribute("[data-loss-chart]", "data-points") or 0)


def test_launch_watch_the_chart_stop_resume_finish_and_download_the_adapter(
    page, log_in, project, alice, version, base_model, sent_tasks, paused_child_until_stop
):
    worker = Worker(sent_tasks)
    worker.start()
    try:
        log_in(page, "alice", "password", f"/projects/{project.pk}/training/new/")
        page.select_option("#f-version", str(version.pk))
        page.select_option("#f-base", str(base_model.pk))
        page.select_option("#f-method", "sft")
        for name, value in {
            "max_steps": STEPS,
            "batch_size": 4,
            "logging_steps": 1,
            "save_steps": 2,
            "eval_steps": 4,
            "lora_r": 4,
            "lora_alpha": 8,
            "max_length": 64,
            "learning_rate": 1e-3,
        }.items():
            page.fill(f"#f-{name}", str(value))
        page.click("#launch-form button[type=submit]")
        page.wait_for_url("**/training-runs/*/")
        run = TrainingRun.objects.get()
        assert run.config["max_steps"] == STEPS

        # The chart fills in while the run goes (the child is held at step 3).
        # Generous: the child starts (torch, the model) on 2 cores shared with the test server.
        page.wait_for_selector("[data-loss-chart] canvas", timeout=300_000)
        page.wait_for_function(
            "n => +document.querySelector('[data-loss-chart]').dataset.points >= n",
            arg=PAUSE_AT,
            timeout=60_000,
        )
        assert paused_child_until_stop == [PAUSE_AT]
        assert page.locator("[data-loss-chart] .u-legend").inner_text().count("loss") >= 2

        page.click("#run-progress button:has-text('Stop')")
        page.wait_for_selector("#run-progress .badge-cancelled", timeout=120_000)
        run.refresh_from_db()
        stopped_at = run.result["global_step"]
        assert PAUSE_AT <= stopped_at < STEPS, run.message
        steps = list(TrainingMetric.objects.filter(run=run).values_list("step", flat=True))
        assert steps == list(range(1, stopped_at + 1))
        page.wait_for_function(
            "n => +document.querySelector('[data-loss-chart]').dataset.points === n",
            arg=stopped_at,
        )

        page.click("#run-progress button:has-text('Resume')")
        # Generous: the resumed child loads, trains, merges and writes its card on 2 shared cores.
        # An ended run shows one badge; a failed one ends the wait at once with its reason.
        page.wait_for_selector(
            "#run-progress :is(.badge-succeeded, .badge-failed)", timeout=360_000
        )
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, run.message
        # The chart goes on from where it stopped to the last step, then stops polling.
        page.wait_for_function(
            "n => { const el = document.querySelector('[data-loss-chart]');"
            " return +el.dataset.points === n && el.dataset.finished === 'true'; }",
            arg=STEPS,
            timeout=30_000,
        )
        steps = list(TrainingMetric.objects.filter(run=run).values_list("step", flat=True))
        assert steps == list(range(1, STEPS + 1))
        assert not worker.errors, worker.errors

        # No reload by hand: the page reloaded itself when the run ended, so the artefacts
        # (outside the polled partial) are there.
        link = page.locator("#artifacts a[href*='/artifacts/adapter/']")
        assert link.count() == 1
        with page.expect_download() as info:
            link.click()
        archive = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes()))
        names = {n.split("/", 1)[1] for n in archive.namelist()}
        assert {"adapter_model.safetensors", "adapter_config.json", "metrics.jsonl"} <= names
    finally:
        worker.halt.set()
        worker.join(timeout=120)
