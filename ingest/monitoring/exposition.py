"""Serving the metrics: `/metrics` on the web tier, and a Celery worker's own port.

Access is the same for both: with METRICS_TOKEN set, only `Authorization: Bearer <token>`
(401 without credentials, 403 with others); without it, only requests made on this
machine (from a loopback address and not through a proxy, which adds X-Forwarded-For);
anyone else gets a 404, as if there were nothing here.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, make_wsgi_app, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer

from ingest.monitoring import multiproc

Answer = tuple[int, str, dict[str, str]]  # status, plain-text reason, headers


def refusal(meta: Mapping[str, object], token: str) -> Answer | None:
    """Why this request may not read the metrics (status, text, headers); None if it may."""
    if token:
        scheme, _, given = str(meta.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return 401, "a bearer token is required\n", {"WWW-Authenticate": 'Bearer realm="metrics"'}
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return 403, "this token may not read the metrics\n", {}
        return None
    if meta.get("HTTP_X_FORWARDED_FOR") or meta.get("HTTP_FORWARDED") or not _loopback(meta.get("REMOTE_ADDR")):
        return 404, "not found\n", {}
    return None


def _loopback(address: object) -> bool:
    try:
        return ipaddress.ip_address(str(address)).is_loopback
    except ValueError:
        return False


class _FoldAwareCollector(multiprocess.MultiProcessCollector):
    """Reads the files while no ended process's counts are being folded into another's."""

    def __init__(self, registry: CollectorRegistry, path: Path) -> None:
        super().__init__(registry, path=str(path))
        self._directory = path

    def collect(self) -> list:
        with multiproc.locked(self._directory, exclusive=False):
            return list(super().collect())


def process_registry() -> CollectorRegistry:
    """The counters of every process of PROMETHEUS_MULTIPROC_DIR, added up; without it, this process's."""
    path = multiproc.directory()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    _FoldAwareCollector(registry, path)
    return registry


def render(*registries: CollectorRegistry) -> bytes:
    return b"".join(generate_latest(registry) for registry in registries)


# -- a worker's port ---------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def guarded(app: Callable, token: str) -> Callable:
    """A WSGI app answering only those `refusal` lets through."""

    def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
        refused = refusal(environ, token)
        if refused is None:
            return app(environ, start_response)
        status, text, headers = refused
        reasons = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
        start_response(f"{status} {reasons[status]}", [("Content-Type", "text/plain"), *headers.items()])
        return [text.encode()]

    return application


def serve_in_thread(bind: str, token: str) -> ThreadingWSGIServer:
    """Serve this machine's process metrics on `bind` ("port" on every interface, or "host:port")."""
    host, _, port = bind.rpartition(":")
    server = make_server(
        host.strip("[]") or "0.0.0.0",
        int(port),
        guarded(make_wsgi_app(process_registry()), token),
        ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server


__all__ = ["CONTENT_TYPE_LATEST", "guarded", "process_registry", "refusal", "render", "serve_in_thread"]
