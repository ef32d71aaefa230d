from django.apps import AppConfig
from django.core.signals import request_finished


class MonitoringConfig(AppConfig):
    """Prometheus metrics (`/metrics`, the workers' port) and structured logs."""

    name = "ingest.monitoring"
    label = "monitoring"

    def ready(self) -> None:
        from ingest.monitoring.logs import clear_request_id

        request_finished.connect(clear_request_id, dispatch_uid="monitoring.clear_request_id")
