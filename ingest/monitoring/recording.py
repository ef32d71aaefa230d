"""What the write path tells the metrics and the logs: one function per event worth counting.

Called after the work committed, so that a rolled-back group or chunk counts nothing.
Each is a few counter increments (a write to this process's memory-mapped file).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ingest.monitoring import instruments
from ingest.records import rejection_rule

batch_logger = logging.getLogger("switchboard.batches")
import_logger = logging.getLogger("switchboard.imports")


def count_rejections(kept_reasons: Iterable[str], omitted: Mapping[str, int] | None = None) -> Counter[str]:
    """Rejections by rule (`ingest.records.rejection_rule`): those kept with their reason, and those only counted."""
    rules = Counter(rejection_rule(reason) for reason in kept_reasons)
    rules.update(omitted or {})
    return rules


def _count_outcomes(families: Mapping[str, int], duplicates: int, rules: Mapping[str, int]) -> None:
    for family, n in families.items():
        if n:
            instruments.events_stored.labels(family).inc(n)
    if duplicates:
        instruments.events_duplicate.inc(duplicates)
    for rule, n in rules.items():
        if n:
            instruments.records_rejected.labels(rule).inc(n)


def batch_stored(
    *,
    batch_id: int,
    group: int,
    created_at: datetime,
    processed_at: datetime,
    records: int,
    families: Mapping[str, int],
    duplicates: int,
    rules: Mapping[str, int],
) -> None:
    """An API batch is done: its counts, its lag (202 → stored), and one log line."""
    lag = max(0.0, (processed_at - created_at).total_seconds())
    _count_outcomes(families, duplicates, rules)
    instruments.batches_processed.inc()
    instruments.processing_lag.observe(lag)
    if batch_logger.isEnabledFor(logging.INFO):
        accepted, rejected = sum(families.values()), sum(rules.values())
        batch_logger.info(
            "batch %s processed: %s records, %s accepted, %s duplicates, %s rejected, lag %.3fs",
            batch_id, records, accepted, duplicates, rejected, lag,
            extra={
                "event": "batch_processed", "batch_id": batch_id, "group": group, "records": records,
                "accepted": accepted, "duplicates": duplicates, "rejected": rejected, "lag_seconds": round(lag, 3),
                "rejections": dict(rules),
            },
        )  # fmt: skip


def batch_error(batch_id: int, message: str, *, final: bool) -> None:
    """An attempt at an API batch failed: retried later, or (`final`) the batch ended failed."""
    instruments.batch_errors.inc()
    log = batch_logger.error if final else batch_logger.warning
    what = "failed for good" if final else "failed, to be retried"
    log(
        "batch %s %s: %s", batch_id, what, message,
        extra={"event": "batch_failed" if final else "batch_error", "batch_id": batch_id, "error": message},
    )  # fmt: skip


def import_chunk_stored(
    *,
    job_id: int | None,
    range_id: int | None,
    batch_id: int,
    lines: int,
    byte_start: int,
    byte_end: int,
    next_line: int,
    families: Mapping[str, int],
    duplicates: int,
    rejection_reasons: Sequence[str],
) -> None:
    """A chunk of an imported file committed with its checkpoint: counts, progress, one log line."""
    rules = count_rejections(rejection_reasons)
    _count_outcomes(families, duplicates, rules)
    instruments.import_lines.inc(lines)
    instruments.import_bytes.inc(max(0, byte_end - byte_start))
    if import_logger.isEnabledFor(logging.INFO):
        accepted, rejected = sum(families.values()), sum(rules.values())
        import_logger.info(
            "import %s checkpoint at byte %s, line %s: %s records, %s accepted, %s duplicates, %s rejected",
            job_id, byte_end, next_line, lines, accepted, duplicates, rejected,
            extra={
                "event": "import_checkpoint", "import_job_id": job_id, "import_range_id": range_id,
                "batch_id": batch_id, "records": lines, "next_offset": byte_end, "next_line": next_line,
                "accepted": accepted, "duplicates": duplicates, "rejected": rejected, "rejections": dict(rules),
            },
        )  # fmt: skip


# -- the request path: label children looked up once per process, not per request ------------


@functools.cache
def _request_series(route: str, status: int) -> tuple[Any, Any]:
    return instruments.http_requests.labels(route, str(status)), instruments.http_request_duration.labels(
        route, str(status)
    )


@functools.cache
def _received_series(app: str) -> Any:
    return instruments.events_received.labels(app)


def request_answered(route: str, status: int, seconds: float) -> None:
    """An HTTP request was answered (`route`: its URL pattern, a bounded set)."""
    count, duration = _request_series(route, status)
    count.inc()
    duration.observe(seconds)


def batch_received(app: str, records: int) -> None:
    """A request body went into the outbox (202); the bodies are counted by `request_answered`."""
    _received_series(app).inc(records)
