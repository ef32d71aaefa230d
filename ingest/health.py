"""What /api/health/ reports: the database, the broker and the backlog of batches.

Anyone may ask, and is told the status only (ok, degraded, down); staff see
the details (hosts, driver errors, queue depth, backlog), which strangers must
not. A report is reused for REPORT_SECONDS, so however often the endpoint is
called, each web process opens at most one broker connection per period.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import connection
from django.utils import timezone
from kombu.exceptions import ChannelError
from kombu.utils.url import maybe_sanitize_url

from config.celery import app as celery_app
from ingest.batches import backlog

BROKER_TIMEOUT_SECONDS = 2
REPORT_SECONDS = 5.0

_report_lock = threading.Lock()
_last_report: tuple[float, dict[str, Any], bool] | None = None


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
        # A broker that accepts connections but never answers must not hang the check.
        timeouts = {"socket_timeout": BROKER_TIMEOUT_SECONDS, "socket_connect_timeout": BROKER_TIMEOUT_SECONDS}
        with celery_app.connection_for_read(transport_options=timeouts) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)
            try:
                depth = conn.default_channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:  # the queue does not exist until a message is sent
                depth = 0
    except Exception as error:  # kombu wraps connection errors differently per transport
        url = maybe_sanitize_url(celery_app.conf.broker_read_url)  # no password
        return {"ok": False, "transport": url.split(":", 1)[0], "url": url, "error": str(error)}
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


def current_health(*, details: bool) -> tuple[dict[str, Any], bool]:
    """The latest report (at most REPORT_SECONDS old); only its status unless `details`.

    Concurrent callers wait for one check rather than each opening connections.
    """
    global _last_report
    with _report_lock:
        if _last_report is None or time.monotonic() - _last_report[0] >= REPORT_SECONDS:
            report, up = health()
            report["checked_at"] = timezone.now().isoformat()
            _last_report = (time.monotonic(), report, up)
        _, report, up = _last_report
    return (report if details else {"status": report["status"]}), up


def forget_last_report() -> None:
    """The next call checks again (tests, or after changing what is checked)."""
    global _last_report
    with _report_lock:
        _last_report = None
