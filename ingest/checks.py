"""System checks of Switchboard's own settings (`manage.py check`)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register


@register()
def time_limit_below_processing_timeout(app_configs: object = None, **kwargs: object) -> list[Warning]:
    """The sweeper re-enqueues a batch still "processing" after PROCESSING_TIMEOUT_SECONDS; a task
    allowed to run that long could then be processed twice at once (counted once, but work lost)."""
    limit, timeout = settings.CELERY_TASK_TIME_LIMIT, settings.SWITCHBOARD["PROCESSING_TIMEOUT_SECONDS"]
    if limit < timeout:
        return []
    return [
        Warning(
            f"TASK_TIME_LIMIT_SECONDS ({limit}) is not below PROCESSING_TIMEOUT_SECONDS ({timeout})",
            hint="A batch still running would be enqueued again; lower the time limit or raise the timeout.",
            id="switchboard.W001",
        )
    ]
