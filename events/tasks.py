"""Beat's retention: events older than RETENTION_DAYS are pruned (events/retention.py)."""

from celery import shared_task

from events.privacy.services import import_running
from events.retention import prune_events, retention_cut


@shared_task(ignore_result=True)
def prune_old_events_task() -> int:
    cut = retention_cut()
    if cut is None or import_running():  # the next hour's run prunes what this one leaves
        return 0
    return prune_events(cut)
