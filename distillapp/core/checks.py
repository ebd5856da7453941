"""System checks: with DISTILLERY_PRODUCTION=1, `manage.py check` (and migrate, runserver) fail
when a secure default has been turned off."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register

MAX_SESSION_AGE = 30 * 24 * 3600


@register(Tags.security)
def production_settings_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not getattr(settings, "PRODUCTION", False):
        return []
    problems: list[tuple[bool, str, str]] = [
        (settings.DEBUG, "DEBUG is on.", "Unset DJANGO_DEBUG."),
        (
            settings.SECURE_HSTS_SECONDS <= 0,
            "HSTS is off (SECURE_HSTS_SECONDS is 0).",
            "Unset DISTILLERY_HSTS_SECONDS or set it to a positive number of seconds.",
        ),
        (
            not settings.SESSION_COOKIE_SECURE,
            "The session cookie is sent over plain HTTP.",
            "Unset DISTILLERY_SECURE_COOKIES (serve the app over HTTPS).",
        ),
        (
            not settings.CSRF_COOKIE_SECURE,
            "The CSRF cookie is sent over plain HTTP.",
            "Unset DISTILLERY_SECURE_COOKIES (serve the app over HTTPS).",
        ),
        (
            not settings.SESSION_COOKIE_HTTPONLY,
            "Scripts can read the session cookie (SESSION_COOKIE_HTTPONLY is off).",
            "Keep SESSION_COOKIE_HTTPONLY = True.",
        ),
        (
            settings.SESSION_COOKIE_SAMESITE not in ("Lax", "Strict"),
            "The session cookie has no SameSite=Lax or Strict.",
            "Set SESSION_COOKIE_SAMESITE to 'Lax'.",
        ),
        (
            settings.CSRF_COOKIE_SAMESITE not in ("Lax", "Strict"),
            "The CSRF cookie has no SameSite=Lax or Strict.",
            "Set CSRF_COOKIE_SAMESITE to 'Lax'.",
        ),
        (
            not 0 < settings.SESSION_COOKIE_AGE <= MAX_SESSION_AGE,
            f"Sessions last {settings.SESSION_COOKIE_AGE} s; at most 30 days are allowed.",
            "Set DISTILLERY_SESSION_AGE to at most 2592000 seconds.",
        ),
    ]
    return [
        Error(message, hint=hint, id=f"distillery.E{index:03d}")
        for index, (failed, message, hint) in enumerate(problems, start=1)
        if failed
    ]
