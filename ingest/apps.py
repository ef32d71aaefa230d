from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_analyst_group(app_config: AppConfig, **kwargs: object) -> None:
    from ingest.analysts import ANALYST_APPS, ensure_analyst_group

    if app_config.label in ANALYST_APPS:  # the last of them sees all their permissions
        ensure_analyst_group()


class IngestConfig(AppConfig):
    name = "ingest"

    def ready(self) -> None:
        from ingest import checks  # noqa: F401 - registers them

        # After every migrate, once the permissions of new models exist.
        post_migrate.connect(_ensure_analyst_group, dispatch_uid="ingest.analyst_group")
