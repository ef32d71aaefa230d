"""Gauges read from the database when Prometheus scrapes the web tier: the outbox and imports.

They describe shared state, not a process, so no process counts them: each scrape asks
the database, through the partial indexes on unfinished and on failed batches
(`rawbatch_pending`, `rawbatch_failed`): the cost grows with the backlog, never with the
table. Every web instance reports the same values; aggregate them with max(), not sum().
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.models import ImportJob, RawBatch

logger = logging.getLogger(__name__)

# An unfinished import whose checkpoint has not moved for this long is not running (killed,
# abandoned): it is left out of the import gauges until it is run again.
IMPORT_RUNNING_SECONDS = 600


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            gauges = list(self._read())
        except Exception as error:  # the database is down: say so, and still serve the counters
            logger.warning("metrics: cannot read the outbox gauges: %s", error)
            yield _gauge("switchboard_database_up", "1 if the scrape could read the database", 0)
            return
        yield _gauge("switchboard_database_up", "1 if the scrape could read the database", 1)
        yield from gauges

    def _read(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        outbox = RawBatch.objects.unfinished().aggregate(batches=Count("pk"), oldest=Min("created_at"))
        oldest = outbox["oldest"]
        failed = RawBatch.objects.filter(status=RawBatch.Status.FAILED).count()
        running = ImportJob.objects.filter(
            finished_at__isnull=True, updated_at__gte=now - timedelta(seconds=IMPORT_RUNNING_SECONDS)
        ).aggregate(jobs=Count("pk"), bytes=Sum("next_offset"), lines=Sum("next_line"))
        yield _gauge(
            "switchboard_outbox_backlog_batches", "API batches not processed yet (pending or processing)",
            outbox["batches"],
        )  # fmt: skip
        yield _gauge(
            "switchboard_outbox_oldest_pending_seconds",
            "Age of the oldest API batch not processed yet (0 when none waits)",
            max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        )
        yield _gauge("switchboard_outbox_failed_batches", "API batches ended failed (manage.py retry_failed)", failed)
        yield _gauge(
            "switchboard_imports_running", "Unfinished imports whose checkpoint moved in the last 10 minutes",
            running["jobs"],
        )  # fmt: skip
        yield _gauge(
            "switchboard_import_bytes_done", "Bytes committed so far by the running imports (their checkpoints)",
            running["bytes"] or 0,
        )  # fmt: skip
        yield _gauge(
            "switchboard_import_lines_done", "Lines committed so far by the running imports (their checkpoints)",
            (running["lines"] or 0) - running["jobs"],  # next_line starts at 1
        )  # fmt: skip
