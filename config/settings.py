"""Settings come from the environment (12-factor); defaults give the embedded
SQLite setup that `make run` uses. `SWITCHBOARD_MODE=production` makes
production explicit: its secrets and services must be configured (the process
stops with a message naming what is missing) and HTTPS is enforced."""

import os
import re
import secrets
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.database import database_from_url
from ingest.monitoring.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_list(value: str) -> list[str]:
    """A comma-separated setting's entries, without the blanks around them or empty ones."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def embedded_secret_key(path: Path = BASE_DIR / "var" / "secret_key") -> str:
    """With no SECRET_KEY configured, a random key kept in var/ (embedded default only),
    readable by its owner only: anyone who reads it can forge sessions."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name (mkstemp: mode 0600), then linked into place:
        # processes starting at once never read a partial key, and the first one's key wins.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(50))
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: renamed instead (the last of racing starts wins)
            if not path.exists():
                os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    if path.stat().st_mode & 0o077:  # made by an earlier version (0644) or by hand
        try:
            path.chmod(0o600)
        except OSError as error:
            print(f"warning: {path} is readable by other users and its mode cannot be fixed ({error})", file=sys.stderr)
    return path.read_text().strip()


MODE = os.environ.get("SWITCHBOARD_MODE", "embedded").strip().lower()
if MODE not in ("embedded", "production"):
    raise ImproperlyConfigured(f"SWITCHBOARD_MODE must be 'embedded' (the default) or 'production', not {MODE!r}")
PRODUCTION = MODE == "production"
# What production cannot run without: none of these has a safe default there.
PRODUCTION_REQUIRES = {
    "SECRET_KEY": "50+ random characters: python -c 'import secrets; print(secrets.token_urlsafe(50))'",
    "ALLOWED_HOSTS": "the host names clients use, comma-separated (e.g. switchboard.example.com)",
    "DATABASE_URL": "PostgreSQL, e.g. postgres://switchboard:password@db.internal:5432/switchboard",
    "CELERY_BROKER_URL": "Redis, e.g. redis://redis.internal:6379/0",
    "REDIS_URL": "Redis for the throttles' shared counts, e.g. redis://redis.internal:6379/1",
}


# A host as Django reads it from a request (django.http.request.host_validation_re, without the
# port it strips before comparing), optionally with the leading dot of a domain and its subdomains.
_HOST_PATTERN = re.compile(r"^\.?([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])$")


def production_problems(environ: dict[str, str]) -> list[str]:
    """What the environment lacks for production, one line each (empty: nothing)."""
    problems = [f"{name} is not set: {what}" for name, what in PRODUCTION_REQUIRES.items() if not environ.get(name)]
    hosts = env_list(environ.get("ALLOWED_HOSTS", ""))
    if environ.get("ALLOWED_HOSTS") and not hosts:
        problems.append("ALLOWED_HOSTS names no host: " + PRODUCTION_REQUIRES["ALLOWED_HOSTS"])
    for entry in hosts:
        if entry != "*" and not _HOST_PATTERN.match(entry.lower()):
            problems.append(
                f"ALLOWED_HOSTS entry {entry!r} matches no host: Django compares the host without its port, "
                "so give a name, a .domain or an address ([::1] for IPv6), no scheme, port or path"
            )
    if "*" in hosts:
        problems.append(
            "ALLOWED_HOSTS accepts any host ('*'): Host headers then reach the links Django builds "
            "(password resets, redirects); " + PRODUCTION_REQUIRES["ALLOWED_HOSTS"]
        )
    key = environ.get("SECRET_KEY", "")
    if key and (len(key) < 50 or len(set(key)) < 5 or "change-me" in key):
        problems.append("SECRET_KEY is too short or a placeholder: " + PRODUCTION_REQUIRES["SECRET_KEY"])
    if environ.get("DEBUG", "").lower() in {"1", "true", "yes", "on"}:
        problems.append("DEBUG is on: never in production (it shows internals and keeps every query in memory)")
    if environ.get("CELERY_BROKER_URL", "").startswith("filesystem://"):
        problems.append("CELERY_BROKER_URL is the embedded filesystem queue: use Redis")
    return problems


if PRODUCTION and (_problems := production_problems(dict(os.environ))):
    raise ImproperlyConfigured(
        "SWITCHBOARD_MODE=production, but the environment is incomplete (see contrib/deploy/switchboard.env.example):\n"
        + "\n".join(f"  - {problem}" for problem in _problems)
    )

# Off by default: with DEBUG on, Django keeps every SQL statement in memory,
# which a long-running worker or a 10 GB import cannot afford.
DEBUG = env_bool("DEBUG", False)
# The embedded default keeps a random key in var/; production must set its own (above).
SECRET_KEY = os.environ.get("SECRET_KEY") or embedded_secret_key()
ALLOWED_HOSTS = env_list(os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver"))
# The key of the hashes that stand for erased actors' ids (events/privacy/blocks.py); empty: SECRET_KEY.
# Set it to keep suppressions working across a rotation of SECRET_KEY.
SUPPRESSION_KEY = os.environ.get("SUPPRESSION_KEY", "")

if PRODUCTION:
    # Behind the documented TLS proxy (docs/operations.md), which sets X-Forwarded-Proto
    # and strips any that a client sent. Only then may Django trust the header.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Load balancers and local probes may ask over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^api/health/$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Joining browsers' preload lists is the domain owner's decision, off unless asked for.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    # The admin's forms post from the public origins (the proxy terminates TLS).
    CSRF_TRUSTED_ORIGINS = env_list(
        os.environ.get(
            "CSRF_TRUSTED_ORIGINS",
            ",".join(f"https://{'*' if host.startswith('.') else ''}{host}" for host in ALLOWED_HOSTS),
        )
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "events",
    "ingest",
    "reports",
    "events.privacy",
    "ingest.monitoring",
]

MIDDLEWARE = [
    # First: times and counts every answer (the fast path counts its own).
    "ingest.monitoring.middleware.request_metrics",
    "django.middleware.security.SecurityMiddleware",
    "config.hostile.refuse_nul_characters",  # a NUL in a path or query: 400, not a database error
    # A view failing on the database answers 503 with Retry-After (config/errors.py).
    "config.errors.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers locked-out admin logins
]

# Admin login failures (django-axes): after AXES_FAILURE_LIMIT failures from one address,
# logins from it are refused (429) for AXES_COOLOFF_MINUTES. A success clears the failures
# of the user who signed in only (ingest/login_lockout.py): one's own login must not wipe
# the guesses at another user's password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_HANDLER = "ingest.login_lockout.OwnFailuresHandler"
AXES_CLIENT_IP_CALLABLE = "ingest.auth.client_ip"  # the throttles' rule for proxies
AXES_VERBOSE = False

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    # PostgreSQL: several hosts allowed, with timeouts so that an outage fails fast (config/database.py).
    "default": database_from_url(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("CONN_MAX_AGE", 60),
        # A kept connection is checked before a request (or task) reuses it, so that the first
        # request after a database restart or failover does not fail on the dead connection.
        health_checks=env_bool("CONN_HEALTH_CHECKS", True),
        # Statements running longer are cancelled (0: no limit). The web server's configuration
        # (contrib/deploy/gunicorn.conf.py) sets it below its worker timeout; workers and
        # manage.py (imports, index builds) run without one.
        statement_timeout=env_int("DB_STATEMENT_TIMEOUT_SECONDS", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; the timeout makes
    # writers queue instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env_int("SQLITE_TIMEOUT", 30),  # seconds a writer waits for the lock
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so that tests can share the test database with the
    # processes they start (import_jsonl runs killed with SIGKILL, workers);
    # beside the database's own file, so that runs on different files do not meet.
    _db_file = Path(DATABASES["default"]["NAME"])
    DATABASES["default"]["TEST"] = {
        "NAME": str(BASE_DIR / "var" / "test.sqlite3")
        if _db_file == BASE_DIR / "db.sqlite3"
        else str(_db_file.with_suffix(".test.sqlite3"))
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"  # filled by collectstatic (make run, deployment)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it
# WhiteNoise serves the admin's static files from the app directories, so
# runserver and gunicorn need no collectstatic or web server in front.
WHITENOISE_USE_FINDERS = True

# Celery: Redis in production; with no broker configured the embedded default
# uses a filesystem queue under var/ so processing stays asynchronous with no
# servers to install.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = Path(os.environ.get("QUEUE_DIR", BASE_DIR / "var" / "queue"))
    (_queue_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        # The worker looks for new files this often (seconds); one message per look.
        "polling_interval": 0.1,
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A Redis that accepts connections but stops answering must fail calls, not hang
    # them (a post enqueuing, the health check); workers' blocking reads are shorter.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 10}
CELERY_TASK_ACKS_LATE = True
# A post must not hang while the broker is down: the batch is already stored
# as pending and the sweeper enqueues it later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / "var" / "celerybeat-schedule")
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Limits per task and per worker child. A task over the time limit is killed (its batch
# is enqueued again by the sweeper, and ends `failed` if it keeps failing); keep the limit
# below PROCESSING_TIMEOUT_SECONDS so that a batch is never processed twice at once.
CELERY_TASK_TIME_LIMIT = env_int("TASK_TIME_LIMIT_SECONDS", 100)
CELERY_TASK_SOFT_TIME_LIMIT = max(1, CELERY_TASK_TIME_LIMIT - 30)  # time to roll back cleanly first
# A child whose resident memory grew past this (KiB) is replaced after its current task.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("WORKER_MAX_MEMORY_MB", 1024) * 1024
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# The per-app throttle counts in the cache: Redis when configured, so that all
# web processes share one count; process memory otherwise.
if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["REDIS_URL"]}
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "ingest.auth.ApiKeyAuthentication",
        "ingest.auth.AnalystTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["ingest.auth.IsAnalyst"],
    # DRF's own, but for a JSON body nested past the recursion limit: a 400, not a 500.
    "DEFAULT_PARSER_CLASSES": [
        "config.hostile.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "ingest.auth.AppRateThrottle",
        "ingest.auth.AnalystRateThrottle",
        "ingest.auth.AnonymousRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "app": os.environ.get("APP_THROTTLE_RATE", "6000/min"),
        "analyst": os.environ.get("ANALYST_THROTTLE_RATE", "600/min"),
        "anon": os.environ.get("ANON_THROTTLE_RATE", "60/min"),
    },
    # Proxies in front whose X-Forwarded-For entry is trusted: the documented TLS proxy in
    # production, none in the embedded default (a client's own header is never believed).
    "NUM_PROXIES": env_int("NUM_PROXIES", 1 if PRODUCTION else 0),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "reports.renderers.FormatNegotiation",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
}
# Analysts' API tokens (django-rest-knox): only a digest is stored; no expiry
# unless one is given when the token is made (`create_analyst --expires-in-days`).
REST_KNOX = {
    "TOKEN_TTL": None,
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_PREFIX": "sbt_",  # recognisable by secret scanners
    "AUTO_REFRESH": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchboard API",
    "DESCRIPTION": "Ingests chat-platform events from trusted apps and answers analysts.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the sidecar package: the docs page needs no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Switchboard limits (bytes).
SWITCHBOARD = {
    "MAX_BODY_BYTES": env_int("MAX_BODY_BYTES", 10 * 1024 * 1024),
    "MAX_RECORD_BYTES": env_int("MAX_RECORD_BYTES", 64 * 1024),
    # A rejected record is kept whole (replayable once MAX_RECORD_BYTES is raised) up to this
    # size, while its batch's rejections keep at most MAX_REJECTED_BYTES_PER_BATCH whole
    # (beyond it, records over MAX_RECORD_BYTES keep their head only): ingest/records.py.
    "MAX_REJECTED_RECORD_BYTES": env_int("MAX_REJECTED_RECORD_BYTES", 1024 * 1024),
    "MAX_REJECTED_BYTES_PER_BATCH": env_int("MAX_REJECTED_BYTES_PER_BATCH", 8 * 1024 * 1024),
    # A body framing into more records is refused (413): a tiny gzip body of blank-free
    # short lines must not turn into hundreds of thousands of rows for a worker.
    "MAX_RECORDS_PER_BODY": env_int("MAX_RECORDS_PER_BODY", 50_000),
    "MAX_REJECTED_RAW_CHARS": 2000,
    "FUTURE_TOLERANCE_SECONDS": 300,
    # A client clock off the receive time by more is corrected by its send time (events/clock.py).
    "CLOCK_SKEW_TOLERANCE_SECONDS": env_int("CLOCK_SKEW_TOLERANCE_SECONDS", 10),
    # Arrays/objects nested deeper are rejected: Django reads JSON back recursively.
    "MAX_NESTING": env_int("MAX_NESTING", 100),
    # Lines per transaction (and checkpoint), validated in parts of 25,000 (loader.PART_LINES):
    # the registry and the rollup written once per transaction (docs/benchmarks.md).
    "IMPORT_CHUNK_LINES": env_int("IMPORT_CHUNK_LINES", 75_000),
    # Processes that validate the next chunks of a file while import_jsonl stores one (0: none).
    "IMPORT_WORKERS": env_int("IMPORT_WORKERS", 1),
    # PostgreSQL: an import of at least this much that also doubles the event table or more
    # builds the table's secondary indexes after loading (ingest/imports/bulk.py).
    "IMPORT_DEFER_INDEXES_BYTES": env_int("IMPORT_DEFER_INDEXES_BYTES", 64 * 1024 * 1024),
    "MAX_STANZA_BYTES": env_int("MAX_STANZA_BYTES", 64 * 1024),
    # The sweeper enqueues a pending batch that the broker never took after
    # this long, and one it took but no worker claimed after the second delay.
    "PENDING_GRACE_SECONDS": env_int("PENDING_GRACE_SECONDS", 60),
    "PENDING_REQUEUE_SECONDS": env_int("PENDING_REQUEUE_SECONDS", 900),
    # A batch still "processing" after this long is assumed lost with its worker
    # and claimed again (a group is bounded below, so it takes seconds).
    "PROCESSING_TIMEOUT_SECONDS": env_int("PROCESSING_TIMEOUT_SECONDS", 120),
    # The outbox (ingest/batches.py): a worker claims up to this many records and
    # body bytes at once and stores them in one transaction.
    "GROUP_RECORDS": env_int("GROUP_RECORDS", 10_000),
    "GROUP_BYTES": env_int("GROUP_BYTES", 8 * 1024 * 1024),
    # A failed batch is retried, alone, after this delay; claimed this many times
    # without finishing it ends "failed" (manage.py retry_failed).
    "RETRY_DELAY_SECONDS": env_int("RETRY_DELAY_SECONDS", 30),
    "MAX_ATTEMPTS": env_int("MAX_ATTEMPTS", 3),
    # Rejections kept per API batch (reason and text); the rest are only counted.
    "MAX_STORED_REJECTIONS": env_int("MAX_STORED_REJECTIONS", 1000),
    # At most one wake-up message per web process and interval (seconds).
    "WAKEUP_INTERVAL_SECONDS": float(os.environ.get("WAKEUP_INTERVAL_SECONDS", 0.25)),
    # A woken worker drains this long at most, then queues another wake-up.
    "DRAIN_SECONDS": env_int("DRAIN_SECONDS", 30),
    # Pause after a group that did not fill its bounds, so that the next one
    # gathers more posts (seconds; the delay every post may see before processing).
    "DRAIN_LINGER_SECONDS": float(os.environ.get("DRAIN_LINGER_SECONDS", 0.3)),
    # App keys are looked up once per web process and this many seconds: a
    # revoked key stops working within this time.
    "KEY_CACHE_SECONDS": env_int("KEY_CACHE_SECONDS", 5),
    # While the database is unavailable, requests answer 503 with this Retry-After (seconds).
    "DB_RETRY_AFTER_SECONDS": env_int("DB_RETRY_AFTER_SECONDS", 5),
    # Days of events kept whole; beat prunes older chat and interaction events every hour,
    # keeping what the summaries need (events/retention.py). 0: keep everything.
    "RETENTION_DAYS": env_int("RETENTION_DAYS", 0),
    # PostgreSQL: creating or dropping a month of the event table (make_partitions, prune_events)
    # waits this long at a time for the table's lock, so that a long read holding the table
    # (pg_dump, an export) never queues the service's queries behind the request for longer;
    # then it lets them go and tries again, and gives up, changing nothing, after the deadline
    # (events/ddl_locks.py). Above deadlock_timeout (1 s), so that autovacuum on the table
    # yields to it; the deadline below beat's tasks' soft time limit (TASK_TIME_LIMIT_SECONDS - 30),
    # so that a give-up is reported, not cut short. 0 s: wait without limit.
    "DDL_LOCK_WAIT_SECONDS": float(os.environ.get("DDL_LOCK_WAIT_SECONDS", 2)),
    "DDL_LOCK_DEADLINE_SECONDS": env_int("DDL_LOCK_DEADLINE_SECONDS", 60),
}

# Plain text by default; LOG_FORMAT=json: one JSON object per line (ingest/monitoring/logs.py).
LOG_FORMAT = (os.environ.get("LOG_FORMAT") or "text").strip().lower()
LOGGING = logging_config(LOG_FORMAT, os.environ.get("LOG_LEVEL", "WARNING"))
# /metrics (ingest/monitoring/exposition.py): with a token, only `Authorization: Bearer <token>`;
# without one, only requests made on this machine (loopback, not through a proxy).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
