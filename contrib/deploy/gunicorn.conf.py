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
max_requests = 5000
max_requests_jitter = 500
accesslog = "-"
