"""Distillery settings. Every value a user may change is read here and listed in the README."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import dj_database_url

from distillapp.core.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("DISTILLERY_VAR_DIR", str(BASE_DIR / "var")))

_DEV_SECRET = "distillery-dev-only-secret-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", _DEV_SECRET)
DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
if SECRET_KEY == _DEV_SECRET and not DEBUG and env_bool("DISTILLERY_PRODUCTION", False):
    raise RuntimeError("Set DJANGO_SECRET_KEY in production.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_htmx",
    "template_partials",
    "distillapp.core",
    "distillapp.accounts",
    "distillapp.projects",
    "distillapp.prompts",
    "distillapp.generation",
    "distillapp.filters",
    "distillapp.review",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "distillapp.accounts.middleware.CurrentOrganizationMiddleware",
    "distillapp.core.middleware.DatabaseInputErrorMiddleware",
]

ROOT_URLCONF = "distillapp.urls"
WSGI_APPLICATION = "distillapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "distillapp.accounts.context_processors.organizations",
            ],
        },
    }
]

VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'distillery.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0))
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the embedded worker writes.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# WhiteNoise serves static/ straight from the app folders too, so `make run` needs no collectstatic.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env_str("DISTILLERY_MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"

# Uploads are streamed to temporary files on disk, never held whole in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(VAR_DIR / "uploads")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
PROMPT_UPLOAD_MAX_BYTES = env_int("DISTILLERY_UPLOAD_MAX_BYTES", 1024**3)

# Secrets (teacher API keys) are encrypted with Fernet. The first key encrypts; all keys decrypt,
# so a new key can be put first and old rows re-encrypted with `manage.py rotate_secrets`.
_default_fernet = hashlib.sha256(("fernet:" + SECRET_KEY).encode()).digest()
ENCRYPTION_KEYS = env_list("DISTILLERY_ENCRYPTION_KEYS", "")
if not ENCRYPTION_KEYS:
    ENCRYPTION_KEYS = [base64.urlsafe_b64encode(_default_fernet).decode()]

# Celery: Redis in production; a file-system broker under var/ when nothing is configured.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

TEACHER_MAX_ATTEMPTS = env_int("DISTILLERY_TEACHER_MAX_ATTEMPTS", 5)
TEACHER_REQUEST_TIMEOUT = env_int("DISTILLERY_TEACHER_TIMEOUT", 120)
REVIEW_LEASE_SECONDS = env_int("DISTILLERY_REVIEW_LEASE_SECONDS", 600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("DISTILLERY_LOG_LEVEL", "INFO")},
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# Review queue (distillapp.review)
# How often (seconds) opening the queue re-syncs it with new completions and filter verdicts.
REVIEW_SYNC_SECONDS = env_int("DISTILLERY_REVIEW_SYNC_SECONDS", 30)

# Generation jobs (distillapp.generation, workers/teachers)
# A running job whose worker has not written a heartbeat for this long is taken over by the next
# worker that gets its task (or re-enqueued when a worker starts).
GENERATION_STALE_SECONDS = env_int("DISTILLERY_GENERATION_STALE_SECONDS", 90)
# Backoff of teacher retries: full jitter in [0, min(cap, base * 2^(attempt-1))] seconds.
TEACHER_BACKOFF_BASE = float(env_str("DISTILLERY_TEACHER_BACKOFF_BASE", "0.5"))
TEACHER_BACKOFF_CAP = float(env_str("DISTILLERY_TEACHER_BACKOFF_CAP", "30"))
# "Test teacher" for local models runs a short generation in a subprocess when the weights are at
# most this many bytes; bigger models are tested by launching a small job on a GPU worker.
LOCAL_TEACHER_TEST_MAX_BYTES = env_int("DISTILLERY_LOCAL_TEACHER_TEST_MAX_BYTES", 500 * 1024**2)
# Redis re-delivers an unacknowledged task after this many seconds; it must exceed the longest
# task (a job's task runs up to the 6 h time limit). Read by workers/app.py.
CELERY_BROKER_VISIBILITY_TIMEOUT = env_int("DISTILLERY_BROKER_VISIBILITY_TIMEOUT", 7 * 3600)

# Filters (distillapp/filters): the LLM judge's parallel calls per run (also capped by the
# teacher's own concurrency) and its per-request timeout in seconds.
FILTERS_JUDGE_CONCURRENCY = env_int("DISTILLERY_JUDGE_CONCURRENCY", 8)
FILTERS_JUDGE_TIMEOUT = env_int("DISTILLERY_JUDGE_TIMEOUT", 60)
