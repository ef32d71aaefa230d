"""What /api/health/ reports: the database, the broker and the backlog of batches."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.utils import timezone
from kombu.exceptions import ChannelError

from config.celery import app as celery_app
from ingest.batches import backlog

BROKER_TIMEOUT_SECONDS = 2


def database_check() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # any driver error means "down"; say which
        return {"ok": False, "vendor": connection.vendor, "error": str(error).strip()}
    return {"ok": True, "vendor": connection.vendor}


def broker_check() -> dict[str, Any]:
    """Connect to the broker and read the default queue's length, failing fast."""
    queue = celery_app.conf.task_default_queue
    try:
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)
            try:
                depth = conn.default_channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:  # the queue does not exist until a message is sent
                depth = 0
    except Exception as error:  # kombu wraps connection errors differently per transport
        return {"ok": False, "transport": celery_app.conf.broker_url.split(":", 1)[0], "error": str(error)}
    return {"ok": True, "transport": conn.transport_cls, "queue": queue, "queue_depth": depth}


def health() -> tuple[dict[str, Any], bool]:
    """The report and whether the service can take events (the database is up).

    A broker outage degrades the service but does not stop it: posts are
    still stored and answered 202, and processed when the broker returns.
    """
    database = database_check()
    report: dict[str, Any] = {"database": database, "broker": broker_check()}
    if database["ok"]:
        pending = backlog()
        oldest = pending.oldest_created_at
        report["batches"] = {
            "unfinished": pending.unfinished,
            "oldest_unfinished_at": oldest.isoformat() if oldest else None,
            "oldest_unfinished_age_seconds": round((timezone.now() - oldest).total_seconds(), 3) if oldest else None,
        }
    if not database["ok"]:
        report["status"] = "down"
    elif not report["broker"]["ok"]:
        report["status"] = "degraded"
    else:
        report["status"] = "ok"
    return report, database["ok"]
