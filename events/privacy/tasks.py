"""Beat's upkeep of erasure blocks: a fence goes once no unfinished batch needs it."""

from celery import shared_task

from events.privacy.services import expire_fences


@shared_task(ignore_result=True)
def expire_fences_task() -> int:
    return expire_fences()
