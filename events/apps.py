from importlib import import_module

from django.apps import AppConfig

# Importing a family module registers it. Order matters: the first family
# whose shape matches a record takes it (SPEC §2's table order).
FAMILY_MODULES = ("events.chat", "events.xmpp", "events.interaction")


class EventsConfig(AppConfig):
    name = "events"

    def ready(self) -> None:
        for module in FAMILY_MODULES:
            import_module(module)
