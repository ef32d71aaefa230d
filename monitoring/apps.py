from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Prometheus metrics (`/metrics`, the workers' port) and structured logs."""

    name = "monitoring"
