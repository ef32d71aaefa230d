"""Beat's retention: events older than RETENTION_DAYS are pruned (events/retention.py); the
event table's month partitions are made ahead (events/partitions.py). A run that gave up
waiting for the event table's lock (events/ddl_locks.py) logs why as an error; the next
run tries again."""

import logging

from celery import shared_task

from events.ddl_locks import LockWaitGaveUp
from events.partitions import make_partitions
from events.privacy.services import import_running
from events.retention import prune_events, retention_cut

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def prune_old_events_task() -> int:
    cut = retention_cut()
    if cut is None or import_running():  # the next hour's run prunes what this one leaves
        return 0
    try:
        return prune_events(cut)
    except LockWaitGaveUp as gave_up:
        logger.error("prune_old_events_task: %s", gave_up)
        return 0


@shared_task(ignore_result=True)
def make_partitions_task() -> int:
    """Daily: the next months' partitions of the event table, made ahead (events/partitions.py)."""
    try:
        return len(make_partitions())
    except LockWaitGaveUp as gave_up:
        logger.error("make_partitions_task: %s", gave_up)
        return 0
