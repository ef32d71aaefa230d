import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("switchboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The sweeper: batches left pending (broker down, worker killed) are enqueued again.
app.conf.beat_schedule = {
    "sweep-pending-batches": {"task": "ingest.tasks.sweep_pending_task", "schedule": 60.0},
}
