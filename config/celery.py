import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("switchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
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
}
