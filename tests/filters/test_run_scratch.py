"""A filter run's scratch database: one file per claim under `$DISTILLERY_VAR_DIR/scratch/`,
deleted however the run ends; a run taken over after its worker was killed starts afresh (nothing
counted twice) and removes what the killed worker left."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from django.utils import timezone

from distillapp.core.runs.services import run_claim
from distillapp.filters.dedup_store import DedupStore
from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus
from distillapp.filters.scratch import ScratchDB
from distillapp.filters.services import filter_run_execute, pipeline
from distillapp.filters.services.run_scratch import scratch_dir
from tests.factories import CompletionFactory, GenerationJobFactory, PromptFactory, TeacherFactory

BASE = (
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the "
    "chloroplasts of plant cells. It happens mostly in leaves, where chlorophyll absorbs light."
)
TEXTS = [
    BASE,
    BASE.replace("mostly", "largely"),
    BASE,
    "I'm sorry, but I can't help with that request, truly.",
    "Rivers carry stones to the sea, and the sea grinds them into sand over many years.",
    "Rivers carry stones to the sea, and the sea grinds them into sand over many years.",
    "",
]


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    return settings.VAR_DIR


@pytest.fixture
def completions(project):
    job = GenerationJobFactory(project=project, teacher=TeacherFactory(project=project))
    return [
        CompletionFactory(job=job, prompt=PromptFactory(prompt_set=job.prompt_set), text=t)
        for t in TEXTS
    ]


def _snapshot(project):
    return sorted(
        CompletionVerdict.objects.filter(project=project).values_list(
            "completion_id", "state", "flags", "duplicate_of_id", "reasons"
        )
    )


def _files():
    folder = scratch_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _spy_on_scratch(monkeypatch) -> list:
    """Record each run's scratch database, checking its file exists while the run works."""
    opened = []
    real = pipeline.run_scratch

    def spy(run, token):
        db = real(run, token)
        assert db.path.exists() and db.path.parent == scratch_dir()
        assert db.path.name == f"filter-run-{run.pk}-{token}.sqlite3"
        opened.append(db)
        return db

    monkeypatch.setattr(pipeline, "run_scratch", spy)
    return opened


@pytest.mark.django_db
def test_a_run_that_succeeds_deletes_its_scratch_file(project, completions, monkeypatch):
    opened = _spy_on_scratch(monkeypatch)
    run = FilterRun.objects.create(project=project)
    run = filter_run_execute(run_id=run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.counts["by_flag"] == {
        "exact_duplicate": 2,
        "near_duplicate": 1,
        "refusal": 1,
        "empty": 1,
    }
    assert len(opened) == 1 and not opened[0].path.exists()
    assert _files() == []


@pytest.mark.django_db
def test_a_run_that_fails_deletes_its_scratch_file(project, completions, monkeypatch):
    opened = _spy_on_scratch(monkeypatch)

    def broken(self, fetch_texts, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(DedupStore, "resolve", broken)
    run = FilterRun.objects.create(project=project)
    with pytest.raises(RuntimeError):
        filter_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "disk on fire" in run.message
    assert len(opened) == 1 and not opened[0].path.exists()
    assert _files() == []


@pytest.mark.django_db
def test_a_cancelled_run_deletes_its_scratch_file(project, completions, monkeypatch):
    opened = _spy_on_scratch(monkeypatch)
    run = FilterRun.objects.create(project=project)
    real = pipeline.prompts_of

    def cancel_meanwhile(rows, checks):
        FilterRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLING)
        return real(rows, checks)

    monkeypatch.setattr(pipeline, "prompts_of", cancel_meanwhile)
    filter_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert len(opened) == 1 and not opened[0].path.exists()
    assert _files() == []


class _Killed(BaseException):
    """What a SIGKILL looks like from inside: no `except Exception`, no status written."""


@pytest.mark.django_db
def test_a_run_taken_over_after_its_worker_was_killed_counts_nothing_twice(
    project, completions, monkeypatch
):
    clean = filter_run_execute(run_id=FilterRun.objects.create(project=project).pk)
    expected_counts, expected = clean.counts, _snapshot(project)
    CompletionVerdict.objects.all().delete()

    run = FilterRun.objects.create(project=project)
    with monkeypatch.context() as killed:
        real_add = DedupStore.add

        def add_then_die(self, *args, **kwargs):
            real_add(self, *args, **kwargs)
            raise _Killed

        killed.setattr(DedupStore, "add", add_then_die)
        # A killed process deletes nothing: the connection dies with it, the file stays.
        killed.setattr(ScratchDB, "close", lambda self: self.conn.close())
        with pytest.raises(_Killed):
            filter_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    leftover = _files()
    assert leftover == [f"filter-run-{run.pk}-{run.claim_token}.sqlite3"]
    # Its state is in the file: the first batch's items.
    with sqlite3.connect(scratch_dir() / leftover[0]) as conn:
        assert conn.execute("SELECT count(*) FROM item").fetchone()[0] == len(TEXTS) - 1
    assert CompletionVerdict.objects.filter(project=project).count() == 0

    # Not stale yet: another worker gets no claim, and the file stays.
    assert filter_run_execute(run_id=run.pk) is None and _files() == leftover
    FilterRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    opened = _spy_on_scratch(monkeypatch)
    resumed = filter_run_execute(run_id=run.pk)
    assert resumed.status == RunStatus.SUCCEEDED
    assert resumed.counts == expected_counts
    assert resumed.counts["total"] == len(TEXTS)
    assert _snapshot(project) == expected
    assert len(opened) == 1 and opened[0].path.name not in leftover
    assert _files() == []


@pytest.mark.django_db
def test_a_run_removes_the_files_of_runs_that_no_worker_owns(project, completions, org):
    from distillapp.projects.models import Project

    folder = scratch_dir()
    folder.mkdir(parents=True)
    other = Project.objects.create(org=org, name="other")
    running = FilterRun.objects.create(
        project=other, status=RunStatus.RUNNING, heartbeat_at=timezone.now()
    )
    done = FilterRun.objects.create(project=other, status=RunStatus.SUCCEEDED)
    queued = FilterRun.objects.create(project=other)
    names = {
        "running": f"filter-run-{running.pk}-abc123.sqlite3",
        "done": f"filter-run-{done.pk}-abc123.sqlite3",
        "queued": f"filter-run-{queued.pk}-abc123.sqlite3",
        "deleted": "filter-run-999999-abc123.sqlite3",
        "unrelated": "notes.txt",
    }
    for name in names.values():
        (folder / name).write_bytes(b"x")
    run = FilterRun.objects.create(project=project)
    assert run_claim(FilterRun, pk=running.pk).state == "busy"  # a live worker has it
    assert filter_run_execute(run_id=run.pk).status == RunStatus.SUCCEEDED
    assert _files() == sorted([names["running"], names["unrelated"]])
