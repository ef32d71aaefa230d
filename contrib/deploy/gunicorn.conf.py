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
