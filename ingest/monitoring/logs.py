"""Structured logs: with LOG_FORMAT=json every log record is one JSON object on one line.

A line carries what ties it to others: `request_id` (the proxy's X-Request-ID when it
sends a sane one, so the app's lines join the proxy's access log; else a new one),
`batch_id` (the id a 202 answers with, then in the worker's lines about that batch),
`group` (the batches a worker stored together) or `import_job_id`. Plain text stays the
default (`make run`): the same messages, without the fields.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Attributes every LogRecord has: anything else on a record was passed as `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def request_id(environ: Mapping[str, object]) -> str:
    """The id of a request: the proxy's X-Request-ID if it looks like one, else a new one."""
    given = str(environ.get("HTTP_X_REQUEST_ID", ""))
    return given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex


def bind_request_id(value: str) -> None:
    """Log records made while this request is served carry `request_id` (RequestIdFilter), up to
    Django's own line about its status, logged after the middleware returned."""
    _request_id.set(value)


def clear_request_id(**kwargs: object) -> None:
    """The request is finished (Django's request_finished signal)."""
    _request_id.set("")


class RequestIdFilter(logging.Filter):
    """Adds the current request's id to records that have none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", "") and (current := _request_id.get()):
            record.request_id = current
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if key == "request":  # Django's request loggers pass the request object
                entry.setdefault("method", getattr(value, "method", None))
                entry.setdefault("path", getattr(value, "path", None))
                continue
            entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def logging_config(fmt: str, level: str) -> dict:
    """The LOGGING setting: plain text (the default) or one JSON object per line (`fmt` "json")."""
    if fmt not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be 'text' (the default) or 'json', not {fmt!r}")
    handler: dict[str, object] = {"class": "logging.StreamHandler", "filters": ["request_id"]}
    if fmt == "json":
        handler["formatter"] = "json"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "ingest.monitoring.logs.RequestIdFilter"}},
        "formatters": {"json": {"()": "ingest.monitoring.logs.JsonFormatter"}},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
    }
