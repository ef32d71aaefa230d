"""Serving the metrics: `/metrics` on the web tier, and a Celery worker's own port.

Access is the same for both: with METRICS_TOKEN set, only `Authorization: Bearer <token>`
(401 without credentials, 403 with others); without it, only requests made on this
machine: from a loopback address, with none of the headers a proxy adds (PROXY_HEADERS), and,
on the web tier, only where no proxy is declared in front (NUM_PROXIES 0): a proxy on this
machine that adds none of them (nginx's bare `proxy_pass`) cannot be told from a local
scrape. Anyone else gets a 404, as if there were nothing here.
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


# Headers only a proxy adds, as WSGI names them (RFC 7239, Via, the de facto and the CDNs' ones;
# every `X-Forwarded-*` too): a loopback request with one came through a proxy on this machine,
# for a client who may be anywhere. Present at all counts, even empty.
PROXY_HEADERS = frozenset(
    f"HTTP_{name}"
    for name in (
        "FORWARDED", "VIA", "X_REAL_IP", "X_CLIENT_IP", "X_CLUSTER_CLIENT_IP", "X_ORIGINAL_FORWARDED_FOR",
        "TRUE_CLIENT_IP", "CF_CONNECTING_IP", "FASTLY_CLIENT_IP",
    )
)  # fmt: skip
FORWARDED_PREFIX = "HTTP_X_FORWARDED_"


def refusal(meta: Mapping[str, object], token: str, proxies: int = 0) -> Answer | None:
    """Why this request may not read the metrics (status, text, headers); None if it may.
    `proxies`: how many proxies the deployment declares in front of this endpoint (NUM_PROXIES)."""
    if token:
        scheme, _, given = str(meta.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return 401, "a bearer token is required\n", {"WWW-Authenticate": 'Bearer realm="metrics"'}
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return 403, "this token may not read the metrics\n", {}
        return None
    if proxies > 0 or _through_proxy(meta) or not _loopback(meta.get("REMOTE_ADDR")):
        return 404, "not found\n", {}
    return None


def _through_proxy(meta: Mapping[str, object]) -> bool:
    return any(name in PROXY_HEADERS or name.startswith(FORWARDED_PREFIX) for name in meta)


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
