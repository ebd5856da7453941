"""Real Celery worker and beat processes for the crash tests (PostgreSQL + Redis only).

They share the test database and the broker with the test, heart-beat and sweep fast (a run is
stale after STALE_SECONDS, beat sweeps every SWEEP_SECONDS), and log to a file the test can read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import USING_POSTGRES, USING_REDIS

STALE_SECONDS = 3
SWEEP_SECONDS = 1
CELERY = str(Path(sys.executable).with_name("celery"))

needs_real_broker_and_database = pytest.mark.skipif(
    not (USING_REDIS and USING_POSTGRES),
    reason="needs Redis (CELERY_BROKER_URL=redis://...) and PostgreSQL (DATABASE_URL) so worker "
    "and beat processes share the broker and the test database; the embedded defaults cannot",
)


def celery_env(**extra: str) -> dict[str, str]:
    """The test's environment, pointed at the test database, with fast staleness and sweeps."""
    url = urlparse(os.environ["DATABASE_URL"])
    env = dict(os.environ)
    env.update(
        DATABASE_URL=urlunparse(url._replace(path="/" + connection.settings_dict["NAME"])),
        DISTILLERY_RUN_STALE_SECONDS=str(STALE_SECONDS),
        DISTILLERY_RUN_SWEEP_SECONDS=str(SWEEP_SECONDS),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def spawn_celery(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [CELERY, "-A", "workers.app", *args, "--loglevel=INFO"],
        cwd=str(settings.BASE_DIR),
        env=celery_env(**env),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_worker(name: str, log: Path, *, queues: str, **env: str) -> subprocess.Popen:
    """One worker process that runs one task at a time, as a `-c 1` GPU worker does."""
    return spawn_celery(
        ["worker", "-Q", queues, "-c", "1", "-P", "solo", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h"],
        log,
        **env,
    )  # fmt: skip


def start_beat(folder: Path, **env: str) -> subprocess.Popen:
    return spawn_celery(["beat", "-s", str(folder / "beat-schedule")], folder / "beat.log", **env)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; log:\n{log.read_text()[-5000:]}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def forget_unacked_messages() -> None:
    """A killed worker's unacknowledged message would come back hours later in this Redis db."""
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("unacked", "unacked_index")
