from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "events.privacy"
    label = "privacy"
    verbose_name = "privacy (erasure)"
