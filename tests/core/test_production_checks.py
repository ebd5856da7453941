from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from distillapp.core.checks import production_settings_check

SECURE = {
    "PRODUCTION": True,
    "DEBUG": False,
    "SECURE_HSTS_SECONDS": 31536000,
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "CSRF_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_AGE": 7 * 24 * 3600,
}


def _ids(settings, **changes) -> list[str]:
    for key, value in {**SECURE, **changes}.items():
        setattr(settings, key, value)
    return [message.id for message in production_settings_check()]


def test_secure_production_settings_pass(settings):
    assert _ids(settings) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"DEBUG": True}, "distillery.E001"),
        ({"SECURE_HSTS_SECONDS": 0}, "distillery.E002"),
        ({"SESSION_COOKIE_SECURE": False}, "distillery.E003"),
        ({"CSRF_COOKIE_SECURE": False}, "distillery.E004"),
        ({"SESSION_COOKIE_HTTPONLY": False}, "distillery.E005"),
        ({"SESSION_COOKIE_SAMESITE": None}, "distillery.E006"),
        ({"CSRF_COOKIE_SAMESITE": "None"}, "distillery.E007"),
        ({"SESSION_COOKIE_AGE": 90 * 24 * 3600}, "distillery.E008"),
    ],
)
def test_each_weakened_setting_fails_in_production(settings, change, expected):
    assert _ids(settings, **change) == [expected]


def test_outside_production_nothing_is_required(settings):
    assert (
        _ids(settings, PRODUCTION=False, SECURE_HSTS_SECONDS=0, SESSION_COOKIE_SECURE=False) == []
    )


def test_manage_py_check_fails_on_a_weak_production_setting(settings):
    _ids(settings, SESSION_COOKIE_SECURE=False)
    with pytest.raises(SystemCheckError, match="distillery.E003"):
        call_command("check")


def test_production_env_turns_the_secure_defaults_on(tmp_path):
    """Settings read from the environment, in a fresh interpreter, as `DISTILLERY_PRODUCTION=1`."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "from django.core.management import call_command; call_command('check'); "
        "print(json.dumps([s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
        " s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, s.SESSION_COOKIE_AGE]))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "distillapp.settings",
        "DISTILLERY_PRODUCTION": "1",
        "DJANGO_SECRET_KEY": "test-only-" + "x" * 50,
        "DISTILLERY_VAR_DIR": str(tmp_path),
    }
    env.pop("DJANGO_DEBUG", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        31536000,
        True,
        True,
        True,
        "Lax",
        604800,
    ]
    weak = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DISTILLERY_SECURE_COOKIES": "0"},
        capture_output=True,
        text=True,
    )
    assert weak.returncode != 0
    assert "distillery.E003" in weak.stderr
