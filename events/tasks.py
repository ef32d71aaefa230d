"""Beat's retention: events older than RETENTION_DAYS are pruned (events/retention.py); the
event table's month partitions are made ahead (events/partitions.py)."""

from celery import shared_task

from events.partitions import make_partitions
from events.privacy.services import import_running
from events.retention import prune_events, retention_cut


@shared_task(ignore_result=True)
def prune_old_events_task() -> int:
    cut = retention_cut()
    if cut is None or import_running():  # the next hour's run prunes what this one leaves
        return 0
    return prune_events(cut)


@shared_task(ignore_result=True)
def make_partitions_task() -> int:
    """Daily: the next months' partitions of the event table, made ahead (events/partitions.py)."""
    return len(make_partitions())
