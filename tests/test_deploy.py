"""compose.yaml, the Makefile and CI must point at entry points that really exist."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import yaml
from django.urls import resolve

from distillapp.core.queues import Queue

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return command if isinstance(command, list) else shlex.split(command)


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_compose_has_every_process():
    assert {"postgres", "redis", "web", "worker", "gpu-worker"} <= set(SERVICES)
    for name in ("postgres", "redis", "web", "worker", "gpu-worker"):
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"
    assert {"pgdata", "artefacts"} <= set(COMPOSE["volumes"])


def test_web_runs_the_real_wsgi_application():
    argv = _command("web")
    assert argv[0] == "gunicorn"
    module_name, attr = argv[1].split(":")
    assert callable(getattr(importlib.import_module(module_name), attr))


def test_web_healthcheck_url_exists():
    test = " ".join(SERVICES["web"]["healthcheck"]["test"])
    path = re.search(r"127\.0\.0\.1:8000(/[^'\"]*)", test).group(1)
    assert resolve(path).url_name == "healthz"


def test_workers_use_the_real_celery_app_and_queues():
    from celery import Celery

    for service, queues, concurrency in (
        ("worker", {"default", "teacher"}, None),
        ("gpu-worker", {"gpu"}, "1"),
    ):
        argv = _command(service)
        assert argv[:1] == ["celery"]
        app = importlib.import_module(_option(argv, "-A")).app
        assert isinstance(app, Celery)
        assert set(_option(argv, "-Q").split(",")) == queues
        assert queues <= {q.value for q in Queue}
        if concurrency:
            assert _option(argv, "-c") == concurrency


def test_gpu_worker_reserves_nvidia_devices():
    devices = SERVICES["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_migrate_service_runs_a_real_management_command():
    from django.core.management import get_commands

    argv = _command("migrate")
    assert argv[1] == "manage.py" and argv[2] in get_commands()


def test_makefile_and_ci_use_the_two_commands():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.count("make test") >= 2
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
