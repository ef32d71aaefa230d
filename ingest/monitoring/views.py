"""`GET /metrics`: Prometheus text format, for operators' Prometheus (access: monitoring/exposition.py)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry

from ingest.monitoring.database import DatabaseCollector
from ingest.monitoring.exposition import CONTENT_TYPE_LATEST, process_registry, refusal, render


def _database_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    # Behind a declared proxy, a loopback request may be the proxy's: only a token then.
    refused = refusal(request.META, settings.METRICS_TOKEN, settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0)
    if refused is not None:
        status, text, headers = refused
        return HttpResponse(text, status=status, content_type="text/plain", headers=headers)
    body = render(process_registry(), _database_registry())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
