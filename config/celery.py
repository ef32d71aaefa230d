import os

from celery import Celery

from ingest.monitoring import worker as worker_metrics  # connects the workers' metrics signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    worker_metrics.use_django_logging()

app = Celery("switchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes the database connections before and after every task, so a
# task never starts on a connection that a database restart or failover killed.
app.autodiscover_tasks()
app.autodiscover_tasks(["ingest.imports"])  # not an app of its own: its tasks module is found here

# The sweepers: batches and import ranges left pending (broker down, worker
# killed) are enqueued again; summaries left stale by an abandoned import are rebuilt.
app.conf.beat_schedule = {
    "sweep-pending-batches": {"task": "ingest.tasks.sweep_pending_task", "schedule": 60.0},
    "sweep-import-ranges": {"task": "ingest.imports.tasks.sweep_ranges_task", "schedule": 60.0},
    "rebuild-stale-summaries": {"task": "ingest.imports.tasks.rebuild_stale_summaries_task", "schedule": 300.0},
    "expire-erasure-fences": {"task": "events.privacy.tasks.expire_fences_task", "schedule": 300.0},
    "prune-old-events": {"task": "events.tasks.prune_old_events_task", "schedule": 3600.0},
    # The event table's next months, made ahead (PostgreSQL; events/partitions.py).
    "make-partitions": {"task": "events.tasks.make_partitions_task", "schedule": 86400.0},
}
