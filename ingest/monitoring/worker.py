"""Celery workers' side of the metrics and logs (connected in config/celery.py).

A worker's pool children count into PROMETHEUS_MULTIPROC_DIR. With WORKER_METRICS_PORT
set, the worker's main process serves their sum on that port ("9101": every interface;
"127.0.0.1:9101": one), under the same access rule as the web tier's /metrics. Without
it, the web tier's /metrics includes them when both share the directory (one machine).
"""

from __future__ import annotations

import logging
import os

from celery import signals

from ingest.monitoring import multiproc

logger = logging.getLogger(__name__)
PORT_ENV = "WORKER_METRICS_PORT"


@signals.worker_init.connect
def prepare_metrics_directory(**kwargs: object) -> None:
    path = multiproc.directory()
    if os.environ.get(PORT_ENV) and path is None:
        raise RuntimeError(
            f"{PORT_ENV} is set but {multiproc.ENV} is not: the pool processes' metrics would be lost; "
            f"set {multiproc.ENV} to a directory of this worker's own"
        )
    if path is not None:
        multiproc.prepare(path)


@signals.worker_ready.connect
def serve_metrics(**kwargs: object) -> None:
    bind = os.environ.get(PORT_ENV, "")
    if bind:
        from django.conf import settings

        from ingest.monitoring.exposition import serve_in_thread

        serve_in_thread(bind, settings.METRICS_TOKEN)
        logger.info("worker metrics on %s", bind)


@signals.worker_process_shutdown.connect
def pool_process_ended(pid: int | None = None, **kwargs: object) -> None:
    multiproc.process_ended(pid or os.getpid())


def use_django_logging() -> None:
    """LOG_FORMAT=json: Celery configures no logging of its own; the worker logs as Django's
    LOGGING says (one JSON object per line), instead of Celery's text format."""

    @signals.setup_logging.connect(weak=False)
    def configure(**kwargs: object) -> None:
        from logging.config import dictConfig

        from django.conf import settings

        dictConfig(settings.LOGGING)
