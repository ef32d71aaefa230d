# gunicorn -c contrib/deploy/gunicorn.conf.py config.wsgi
# The request path only frames and stores raw batches, so a few sync workers
# per core go far; threads cover requests waiting on the database.
import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("WEB_THREADS", 2))
timeout = 30
graceful_timeout = 30
# The web's SQL statements are cancelled before the worker timeout would kill the worker with
# its statement still running on the server (the client gets a 503 with Retry-After instead).
os.environ.setdefault("DB_STATEMENT_TIMEOUT_SECONDS", str(timeout - 5))
# A worker restarts after this many requests (a bound on slow leaks). Not much
# lower: a restart re-imports Django (~1 s of CPU), which at ~800 posts/s every
# few thousand requests would cost a noticeable share of the web tier.
max_requests = 200_000
max_requests_jitter = 20_000
# Access log lines cost each request ~0.1 ms of the web tier's CPU; the proxy in
# front usually logs requests already. ACCESS_LOG=- writes them to stdout.
accesslog = os.environ.get("ACCESS_LOG") or None

# Metrics (/metrics): every worker counts into PROMETHEUS_MULTIPROC_DIR and a scrape adds
# them up. The service manager gives a fresh directory (systemd's RuntimeDirectory, a tmpfs
# in compose, var/metrics in `make run`); without one, a temporary directory of this server's.
# At start the files of processes that are gone are removed; a worker that exits is marked
# dead and its counters are added to the master's file (they stay in the totals).
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="switchboard-metrics-")


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    from pathlib import Path

    from ingest.monitoring.multiproc import prepare

    prepare(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))


def on_exit(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    if _own_metrics_dir:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn's Arbiter and Worker
    from ingest.monitoring.multiproc import process_ended

    # Its counts join the master's file (the master counts nothing itself): the directory holds
    # one set of files per live worker, however many workers max_requests has replaced.
    process_ended(worker.pid, fold_into_owner=os.getpid())


# LOG_FORMAT=json: gunicorn's own lines (start, worker exits, access log) as JSON too.
if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "ingest.monitoring.logs.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
