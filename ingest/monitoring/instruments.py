"""Every Prometheus metric that processes count into (prometheus-client).

With PROMETHEUS_MULTIPROC_DIR set before the process starts, each process writes its
values to files of its own in that directory (a memory-mapped write per increment, no
lock shared between processes) and a scrape adds up the files of every process
(`monitoring.exposition`). The gauges read from the database at scrape time are not
here: they belong to no process (`monitoring.database`).

Labels are bounded sets only (routes, status codes, families, rejection rules, app
names): never a site, an actor or an id.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from ingest.monitoring import multiproc

multiproc.ensure_directory()  # before the first metric: each writes its file there at once

# Seconds. The fast path answers in about a millisecond; Django's pages in tens.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from 202 to stored: a linger of 0.3 s when idle, minutes when a backlog builds.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

http_requests = Counter(
    "switchboard_http_requests", "HTTP requests answered, by route pattern and status code", ["route", "status"]
)
http_request_duration = Histogram(
    "switchboard_http_request_duration_seconds",
    "Time to answer an HTTP request, by route pattern and status code",
    ["route", "status"],
    buckets=REQUEST_BUCKETS,
)
events_received = Counter(
    "switchboard_events_received",
    "Records accepted into the outbox (answered 202), by client app",
    ["app"],
)

events_stored = Counter(
    "switchboard_events_stored", "New events stored, by API batches and imports, by family", ["family"]
)
records_rejected = Counter(
    "switchboard_records_rejected",
    "Records rejected, by API batches and imports, by rule (ingest.records.REJECTION_RULES)",
    ["rule"],
)
events_duplicate = Counter(
    "switchboard_events_duplicate", "Valid records whose event was stored already (counted once, not stored again)"
)
batches_processed = Counter("switchboard_batches_processed", "API batches a worker stored (done)")
batch_errors = Counter(
    "switchboard_batch_errors", "Attempts at an API batch that failed (retried later, or ending failed)"
)
processing_lag = Histogram(
    "switchboard_processing_lag_seconds",
    "Per API batch: seconds from its 202 to its events being stored",
    buckets=LAG_BUCKETS,
)

import_lines = Counter("switchboard_import_lines", "Records (non-blank lines) of files imported and committed")
import_bytes = Counter("switchboard_import_bytes", "Bytes of files imported and committed (decompressed)")
