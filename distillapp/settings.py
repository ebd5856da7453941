"""Distillery settings. Every value a user may change is read here and listed in the README."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF

from distillapp.core.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("DISTILLERY_VAR_DIR", str(BASE_DIR / "var")))

_DEV_SECRET = "distillery-dev-only-secret-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", _DEV_SECRET)
DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# Production turns on the secure defaults below; distillapp.core.checks fails `manage.py check`
# (and so migrate, runserver) when any of them is turned off again.
PRODUCTION = env_bool("DISTILLERY_PRODUCTION", False)
if SECRET_KEY == _DEV_SECRET and not DEBUG and PRODUCTION:
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
    # ninja in INSTALLED_APPS makes /api/v1/docs use its bundled Swagger UI instead of a CDN.
    "ninja",
    "csp",
    "axes",
    "distillapp.core",
    "distillapp.accounts",
    "distillapp.projects",
    "distillapp.prompts",
    "distillapp.generation",
    "distillapp.filters",
    "distillapp.review",
    "distillapp.datasets",
    "distillapp.training",
    "distillapp.evaluation",
    "distillapp.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Before CSRF, which reads the body: refuses bodies over the route's limit unread.
    "distillapp.projects.limits.RequestBodyLimitMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "distillapp.accounts.middleware.CurrentOrganizationMiddleware",
    "distillapp.core.middleware.DatabaseInputErrorMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
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
    # Tests use a file as well. Django's default in-memory test database is opened in shared-cache
    # mode, where a second connection (a worker thread beside the live server) gets "database table
    # is locked" at once instead of waiting on the busy timeout as it does on a real deployment.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# django-axes checks lockouts before the normal backend (docs: "AxesStandaloneBackend first").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
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
# Bodies are refused before they are read (distillapp/projects/limits.py): anonymous callers get a few
# KiB, signed-in callers 1 MiB, and only the upload routes, for members who may upload, get
# DISTILLERY_UPLOAD_MAX_BYTES. Below FILE_UPLOAD_MAX_MEMORY_SIZE nothing is spooled to disk.
REQUEST_MAX_BYTES_ANONYMOUS = env_int("DISTILLERY_ANONYMOUS_BODY_MAX_BYTES", 64 * 1024)
REQUEST_MAX_BYTES = env_int("DISTILLERY_BODY_MAX_BYTES", 1024 * 1024)

# User-given URLs (teachers, judges) may only reach public addresses, except the networks and
# host names listed here (docs/security.md); `make run` allows loopback for a local vLLM/Ollama.
OUTBOUND_ALLOW = env_list("DISTILLERY_OUTBOUND_ALLOW", "")
# Local model folders (hf_local teachers, base models) load only from these roots and from the
# organisation's own artefacts under MEDIA_ROOT/orgs/<id>/.
MODEL_ROOTS = [
    Path(p).expanduser() for p in env_list("DISTILLERY_MODEL_ROOTS", str(VAR_DIR / "models"))
]

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
    "filters": {"forbidden_one_line": {"()": "distillapp.core.logging.ForbiddenOneLine"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # An expected 403 (PermissionDenied) is one line, not a traceback.
    "loggers": {"django.request": {"filters": ["forbidden_one_line"]}},
    "root": {"handlers": ["console"], "level": env_str("DISTILLERY_LOG_LEVEL", "INFO")},
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("DISTILLERY_SESSION_AGE", 7 * 24 * 3600)
# Secure cookies and HSTS need HTTPS in front of the app (a TLS-terminating proxy in production).
SESSION_COOKIE_SECURE = env_bool("DISTILLERY_SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("DISTILLERY_HSTS_SECONDS", 365 * 24 * 3600 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DISTILLERY_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_SSL_REDIRECT = env_bool("DISTILLERY_SSL_REDIRECT", False)
if env_bool("DISTILLERY_TLS_PROXY", False):
    # Only behind a proxy that always sets X-Forwarded-Proto; otherwise clients could forge it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # The login rate limit then counts the client address the proxy appends, not the proxy's.
    AXES_IPWARE_PROXY_COUNT = 1
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Content Security Policy (django-csp): no inline scripts, styles or eval anywhere; htmx is told
# not to need them (see base.html's htmx-config).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Login rate limit (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one username, or
# from one address, the next login is refused for LOGIN_LOCKOUT_SECONDS (counted from the last
# failure). Axes refuses the attempt that reaches its limit, hence the + 1.
LOGIN_FAILURE_LIMIT = env_int("DISTILLERY_LOGIN_FAILURE_LIMIT", 10)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT + 1
AXES_COOLOFF_TIME = timedelta(seconds=env_int("DISTILLERY_LOGIN_LOCKOUT_SECONDS", 60))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_CALLABLE = "distillapp.accounts.views.login_locked_out"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

# Accounts: invitations and sign-up.
OPEN_SIGNUP = env_bool("DISTILLERY_OPEN_SIGNUP", False)
INVITATION_DEFAULT_DAYS = env_int("DISTILLERY_INVITATION_DAYS", 7)
INVITATION_MAX_DAYS = 30

# Review queue (distillapp.review)
# How often (seconds) opening the queue re-syncs it with new completions and filter verdicts.
REVIEW_SYNC_SECONDS = env_int("DISTILLERY_REVIEW_SYNC_SECONDS", 30)

# Runs (distillapp.core.runs): a running run whose worker wrote no heartbeat for this long is
# stale; Celery beat's sweep, every RUN_SWEEP_SECONDS, re-sends its task and another worker takes
# it over. Workers heart-beat every few seconds, so the threshold only needs to cover pauses.
RUN_STALE_SECONDS = env_int("DISTILLERY_RUN_STALE_SECONDS", 90)
RUN_SWEEP_SECONDS = env_int("DISTILLERY_RUN_SWEEP_SECONDS", 30)

# Generation jobs (distillapp.generation, workers/engine/teachers)
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

# Training (distillapp/training): processes per training run on a gpu worker. 0 = one per GPU the
# worker sees (CUDA_VISIBLE_DEVICES, else nvidia-smi), one process on a CPU-only host; above 1 the
# child is started with torchrun (DDP).
TRAINING_PROCESSES = env_int("DISTILLERY_TRAINING_PROCESSES", 0)

# Evaluation (distillapp/evaluation): the price of one GPU hour in USD, for the $ per 1k requests
# of local models (measured throughput × this price).
EVAL_GPU_HOUR_USD = float(env_str("DISTILLERY_GPU_HOUR_USD", "2.0") or "2.0")
# How many prompts each local model answers one at a time (latency and batch-1 tokens/s) before
# the rest go in batches. Not a user setting.
EVAL_BATCH1_REQUESTS = 8
