from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"

    def ready(self) -> None:
        # Importing a family module registers it.
        from events import chat  # noqa: F401
