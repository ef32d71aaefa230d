"""The hot path of `POST /api/events/`: an app posting with an active key.

It runs in front of Django (`wsgi()` wraps the WSGI application): no request
object, middleware, URL resolution or response machinery, which cost more than
the work itself (~0.9 of ~1.7 ms of CPU per single-event post). It does what the
view would: Host validation, the cached key, the app's throttle, the body checks,
one insert; the answers (202, 400, 413, 415, 429) are the view's, byte for byte.
Anything else — no key, another scheme, a key that is not active, a host not
allowed, plain HTTP where HTTPS is required (Django redirects it) — is handed to
Django, so that every other answer stays Django's and DRF's. Production mode
(SECURE_SSL_REDIRECT behind the TLS proxy) is served here too: a request the proxy
marks as HTTPS gets the HSTS header Django's security middleware would add.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import orjson
from django.conf import settings
from django.core import signals
from django.http.request import split_domain_port, validate_host
from rest_framework import exceptions

from config.errors import database_unavailable, database_unavailable_answer
from config.hostile import has_nul_header
from events.clock import header_epoch
from events.registry import Invalid
from ingest.auth import KEYWORD, AppRateThrottle
from ingest.batches import receive_batch
from ingest.body import BodyError, count_records, decode_body
from ingest.keys import cached_application_for_key
from ingest.models import Application
from ingest.monitoring import logs, recording

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("django.request")

PATH = "/api/events/"
SENT_AT_HEADER = "HTTP_X_SENT_AT"  # the client's send time of the body (events/clock.py)
ROUTE = "api/events/"  # the URL pattern Django reports for PATH: one metrics label for both paths
BATCHES_URL = "/api/batches/"  # + id + "/": the batch-detail route (ingest/urls.py)
Answer = tuple[int, dict, dict[str, str]]  # status, JSON body, extra headers
REASONS = {202: "Accepted", 400: "Bad Request", 411: "Length Required", 413: "Request Entity Too Large",
           415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}  # fmt: skip


def is_chunked(meta: Mapping[str, object]) -> bool:
    return "chunked" in str(meta.get("HTTP_TRANSFER_ENCODING", "")).lower()


def read_body(meta: Mapping[str, object], read: Callable[[int], bytes], limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` before holding it whole.

    A chunked body (`Transfer-Encoding: chunked`, no Content-Length) is read from the server's
    stream, which the server de-chunks and ends with the body (`wsgi.input_terminated`: gunicorn,
    mod_wsgi), up to `limit + 1` bytes, on both paths: Django's own request stream stops at
    Content-Length, none, so Django read an empty body (400) where the fast path read it (202).
    """
    if is_chunked(meta):
        if not meta.get("wsgi.input_terminated"):
            raise BodyError("this server cannot read a chunked body: send Content-Length", 411)
        read = meta["wsgi.input"].read  # type: ignore[attr-defined]
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BodyError("invalid Content-Length header") from None
    if declared > limit:
        raise BodyError(f"the body is {declared} bytes, over the limit of {limit}", 413)
    try:
        raw = read(limit + 1)
    except Exception as error:  # the server's de-chunker refusing broken framing (gunicorn's own types)
        if not is_chunked(meta):
            raise
        raise BodyError(f"the chunked body's framing is broken: {type(error).__name__}") from None
    if len(raw) > limit:
        raise BodyError(f"the body is over the limit of {limit} bytes", 413)
    return raw


def send_time_header(meta: Mapping[str, object]) -> datetime | None:
    """The client's send time for the whole body (`X-Sent-At`: epoch seconds or ISO 8601), if
    given; a value that is not one is refused (400) before anything is stored."""
    text = meta.get(SENT_AT_HEADER)
    if text is None:
        return None
    try:
        return datetime.fromtimestamp(header_epoch(str(text)), UTC)
    except (Invalid, OverflowError, OSError, ValueError) as error:
        raise BodyError(f"invalid X-Sent-At header: {error}") from None


def accept(meta: Mapping[str, object], read: Callable[[int], bytes], app: Application) -> Answer:
    """Store the body raw (one insert) and answer 202, or say why it cannot be taken."""
    limit = settings.SWITCHBOARD["MAX_BODY_BYTES"]
    content_type = str(meta.get("CONTENT_TYPE", ""))
    content_encoding = str(meta.get("HTTP_CONTENT_ENCODING", ""))
    try:
        sent_at = send_time_header(meta)
        raw = read_body(meta, read, limit)
        records = count_records(decode_body(raw, content_encoding, limit), content_type)
    except BodyError as error:
        return error.status, {"detail": str(error)}, {}
    batch = receive_batch(app, raw, content_type, content_encoding, records, sent_at)
    recording.batch_received(app.name, records)
    status_url = f"{BATCHES_URL}{batch.pk}/"
    data = {"batch_id": batch.pk, "records": records, "status": batch.status, "status_url": status_url}
    return 202, data, {"Location": status_url}


def app_post(meta: Mapping[str, object], read: Callable[[int], bytes]) -> Answer | None:
    """An active app's post, throttled and accepted; None when it is not one (Django answers)."""
    scheme, _, key = str(meta.get("HTTP_AUTHORIZATION", "")).partition(" ")
    key = key.strip()
    if scheme.lower() != KEYWORD.lower() or not key or " " in key:
        return None
    app = cached_application_for_key(key)
    if app is None:
        return None
    throttle = AppRateThrottle()
    if not throttle.allow_ident(str(app.pk)):
        wait = throttle.wait()
        detail = str(exceptions.Throttled(wait).detail)
        return 429, {"detail": detail}, {"Retry-After": str(math.ceil(wait))}
    return accept(meta, read, app)


def is_secure(environ: Mapping[str, object]) -> bool:
    """Django's `request.is_secure()`: the trusted proxy's header when configured and sent,
    else the server's own scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return str(value).split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"


def _redirected_to_https(environ: Mapping[str, object]) -> bool:
    """Whether Django's security middleware would answer this request with a redirect to HTTPS."""
    if not settings.SECURE_SSL_REDIRECT or is_secure(environ):
        return False
    return not any(re.search(pattern, PATH.lstrip("/")) for pattern in settings.SECURE_REDIRECT_EXEMPT)


def _served_here(environ: Mapping[str, object]) -> bool:
    if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != PATH:
        return False
    if str(environ.get("HTTP_AUTHORIZATION", ""))[: len(KEYWORD) + 1].lower() != KEYWORD.lower() + " ":
        return False
    if settings.USE_X_FORWARDED_HOST or _redirected_to_https(environ):
        return False  # Django's middleware reads the proxy's host header / redirects to HTTPS
    if has_nul_header(environ):
        return False  # Django's middleware refuses it, saying why (config/hostile.py)
    host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return bool(domain) and validate_host(domain, allowed)


def _security_headers(secure: bool) -> list[tuple[str, str]]:
    """What Django's security and clickjacking middleware add to an answer (HSTS: over HTTPS only)."""
    headers = [("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY"))]
    if secure and settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        headers.append(("Strict-Transport-Security", hsts))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append(("Referrer-Policy", settings.SECURE_REFERRER_POLICY))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    return headers


def wsgi(django_app: Callable) -> Callable:
    """`django_app` with app posts served before it."""
    # Built once, as Django's middleware reads its settings once: over HTTP and over HTTPS.
    security = {secure: _security_headers(secure) for secure in (False, True)}

    def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not _served_here(environ):
            return django_app(environ, start_response)
        started = time.perf_counter()
        signals.request_started.send(sender=__name__, environ=environ)  # database connection upkeep
        try:
            stream = environ["wsgi.input"]
            answer = app_post(environ, stream.read)
            if answer is None:  # not an active key: Django reads the body, which is still unread
                return django_app(environ, start_response)
            status, data, headers = answer
        except Exception as error:
            if database_unavailable(error):  # down, restarting, failing over: the client retries
                status, data, headers = database_unavailable_answer(error)
            else:
                logger.exception("POST %s failed", PATH)
                status, data, headers = 500, {"detail": "Internal server error; it has been logged."}, {}
        finally:
            signals.request_finished.send(sender=__name__)
        if status >= 400:  # as Django's handler logs them (django.request)
            log = request_logger.error if status >= 500 else request_logger.warning
            extra = {"status_code": status, "method": "POST", "path": PATH, "request_id": logs.request_id(environ)}
            log("%s: %s", REASONS.get(status, ""), PATH, extra=extra)
        body = orjson.dumps(data)
        start_response(
            f"{status} {REASONS.get(status, '')}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *headers.items(),
                *security[is_secure(environ)],
            ],
        )
        recording.request_answered(ROUTE, status, time.perf_counter() - started)
        return [body]

    return application
