"""Who may call the API: client apps with an API key, analysts with a token or session."""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from ingest.analysts import analyst_refusal
from ingest.keys import cached_application_for_key
from ingest.models import Application

KEYWORD = "Api-Key"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppPrincipal:
    """`request.user` for a client app: authenticated, but never an analyst."""

    app: Application
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False

    def __str__(self) -> str:
        return f"app {self.app.name}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>`."""

    def authenticate(self, request: Request) -> tuple[AppPrincipal, Application] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != KEYWORD.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(f"Malformed Authorization header: expected '{KEYWORD} <key>'.")
        app = cached_application_for_key(header[1].decode("latin-1"))
        if app is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return AppPrincipal(app), app

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


class AnalystTokenAuthentication(KnoxTokenAuthentication):
    """`Authorization: Token <token>` for analysts (ingest.analysts): stored as a digest,
    revoked by deleting it, refused after its expiry."""

    def authenticate_credentials(self, token: bytes) -> tuple:
        # Knox decodes the token as UTF-8; a header is Latin-1 text, so `Token é` raised a 500.
        try:
            token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)


def request_app(request: Request) -> Application | None:
    return request.auth if isinstance(request.auth, Application) else None


class IsApp(permissions.BasePermission):
    message = "This endpoint is for client apps: send 'Authorization: Api-Key <key>'."

    def has_permission(self, request: Request, view: object) -> bool:
        return request_app(request) is not None


class IsAnalyst(permissions.BasePermission):
    """An analyst signed in (token or admin session), as the account stands at this request
    (ingest.analysts.analyst_refusal); app keys cannot read analyses."""

    message = "Analysts only: use a user token ('Authorization: Token <token>') or an admin session."

    def has_permission(self, request: Request, view: object) -> bool:
        if not isinstance(request.user, AbstractBaseUser):
            return False
        refusal = analyst_refusal(request.user)
        if refusal is not None:
            self.message = f"Analysts only: {refusal}."
        return refusal is None


class IsAppOrAnalyst(permissions.BasePermission):
    message = "Send an app key ('Authorization: Api-Key <key>') or an analyst token."

    def has_permission(self, request: Request, view: object) -> bool:
        if IsApp().has_permission(request, view):
            return True
        analyst = IsAnalyst()
        allowed = analyst.has_permission(request, view)
        if not allowed and isinstance(request.user, AbstractBaseUser):
            self.message = analyst.message  # why this account is refused
        return allowed


def client_ip(request: HttpRequest | Request) -> str:
    """The caller's address, for throttles and admin login lockouts: the address the last
    NUM_PROXIES trusted proxies saw (X-Forwarded-For is a client's to forge beyond them)."""
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = forwarded.split(",")
        if address := ip_address_of(hops[-min(proxies, len(hops))].strip()):
            return address
    return request.META.get("REMOTE_ADDR", "")


def ip_address_of(hop: str) -> str | None:
    """A forwarded hop's IP address, without the port some proxies add ("203.0.113.7:4711",
    "[2001:db8::7]:443"); None for one that is no address ("unknown"): the lockouts store it in
    an address column (PostgreSQL's inet refused such text with a 500)."""
    if hop.startswith("["):
        hop = hop[1:].partition("]")[0]
    elif hop.count(":") == 1:
        hop = hop.partition(":")[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None


SYNC_SECONDS = 0.1  # longest a web process counts requests on its own before adding them to the cache


@dataclass(slots=True)
class _Tally:
    """One identity's requests as this process knows them."""

    window: int = -1
    shared: int = 0  # this window's count in the cache when last read (our added ones included)
    previous: int = 0  # the previous window's count in the cache when last read
    unsynced: int = 0  # requests this process let through since, not yet added to the cache
    synced_at: float = 0.0


_tallies: dict[tuple[str, str, int, int], _Tally] = {}
_tallies_lock = threading.Lock()


class CounterRateThrottle(throttling.BaseThrottle):
    """A request rate (`"N/period"` from DEFAULT_THROTTLE_RATES[scope]) per identity, counted
    in the cache with a sliding-window counter: this window's count plus the previous
    window's, weighted by how much of it still overlaps the last `period`.

    Each web process adds its requests to the shared count in the cache (Redis: INCRBY,
    EXPIRE, GET in one pipeline) at most every SYNC_SECONDS or every 1 % of the rate,
    whichever comes first, and decides in between from the last count it read plus its
    own: a busy app's posts mostly cost no round trip, and the limit is exceeded by at
    most that much per process (exact for small rates: 2/min syncs on every request).
    DRF's SimpleRateThrottle reads and writes the list of every request's time (6,000
    entries at 6000/min) on each one. Refused requests are not counted, as in DRF.
    Subclasses name `scope` and the identity.
    """

    scope = ""
    cache_format = "throttle:%(scope)s:%(ident)s:%(window)d"

    def get_ident(self, request: Request) -> str | None:  # type: ignore[override]
        raise NotImplementedError

    def get_rate(self) -> tuple[int, int] | None:
        # Read at call time (DRF binds rates at import), so settings changes apply.
        rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get(self.scope)
        if not rate:
            return None
        count, period = rate.split("/")
        return int(count), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]

    def allow_request(self, request: Request, view: object) -> bool:
        return self.allow_ident(self.get_ident(request))

    def allow_ident(self, ident: str | None) -> bool:
        """Count a request of `ident`; False (and `wait()` says how long) when over the rate.

        If the cache is unreachable the request is let through: a throttle must not turn
        a Redis outage into refused posts (SPEC §7: posts are answered 202 while it is down).
        """
        self.wait_seconds = None
        try:
            return self._allow_ident(ident)
        except Exception as error:  # redis-py, pylibmc... each raise their own
            logger.warning("throttle %s not applied: the cache is unavailable (%s)", self.scope, error)
            return True

    def _allow_ident(self, ident: str | None) -> bool:
        rate = self.get_rate()
        if ident is None or rate is None:
            return True
        allowed, period = rate
        now = time.time()
        window, elapsed = divmod(now, period)
        window = int(window)
        key = self.cache_format % {"scope": self.scope, "ident": ident, "window": window}
        with _tallies_lock:
            tally = _tallies.setdefault((self.scope, ident, allowed, period), _Tally())
            if tally.window != window:
                tally.window, tally.unsynced, tally.synced_at = window, 0, 0.0
            synced = tally.unsynced + 1 >= max(1, allowed // 100) or now - tally.synced_at >= SYNC_SECONDS
            if synced:  # add ours (this request included) and read everyone's
                previous_key = self.cache_format % {"scope": self.scope, "ident": ident, "window": window - 1}
                tally.shared, tally.previous = _count(key, previous_key, 2 * period, tally.unsynced + 1)
                tally.unsynced, tally.synced_at = 0, now
                count = tally.shared
            else:
                count = tally.shared + tally.unsynced + 1
            overlap = 1 - elapsed / period
            if tally.previous * overlap + count <= allowed:
                if not synced:
                    tally.unsynced += 1
                return True
            if synced:  # not counted: the client may retry as soon as the rate allows
                cache.decr(key)
                tally.shared -= 1
            previous = tally.previous
        if count > allowed or previous == 0:
            self.wait_seconds = period - elapsed
        else:  # wait until enough of the previous window has slid out
            self.wait_seconds = max(0.0, (overlap - (allowed - count + 1) / previous) * period)
        return False

    def wait(self) -> float | None:
        return None if self.wait_seconds is None else max(1.0, self.wait_seconds)


def _count(key: str, previous_key: str, ttl: int, add: int) -> tuple[int, int]:
    """Add `add` to `key`, read it and `previous_key`: one round trip on Redis."""
    backend = caches[DEFAULT_CACHE_ALIAS]  # `cache` is a proxy to it
    if isinstance(backend, RedisCache):
        key, previous_key = backend.make_and_validate_key(key), backend.make_and_validate_key(previous_key)
        client = _redis_client(backend)
        pipeline = client.pipeline(transaction=False).incrby(key, add).expire(key, ttl).get(previous_key)
        count, _, previous = pipeline.execute()
        return count, int(previous or 0)
    cache.add(key, 0, ttl)
    return cache.incr(key, add), int(cache.get(previous_key) or 0)


@functools.cache
def _redis_client(backend: RedisCache) -> object:
    """One client per process: Django makes a new one per call, and a redis-py client
    builds its table of ~170 reply callbacks when made (~0.4 ms)."""
    return backend._cache.get_client(write=True)


class AppRateThrottle(CounterRateThrottle):
    """Per-app request rate (`APP_THROTTLE_RATE`)."""

    scope = "app"

    def get_ident(self, request: Request) -> str | None:  # type: ignore[override]
        app = request_app(request)
        return None if app is None else str(app.pk)


class AnalystRateThrottle(CounterRateThrottle):
    """Per-user request rate of analysts (`ANALYST_THROTTLE_RATE`), by token or session."""

    scope = "analyst"

    def get_ident(self, request: Request) -> str | None:  # type: ignore[override]
        user = request.user
        return str(user.pk) if isinstance(user, AbstractBaseUser) else None


class AnonymousRateThrottle(CounterRateThrottle):
    """Per-address rate of callers without credentials (`ANON_THROTTLE_RATE`): health, schema, docs."""

    scope = "anon"

    def get_ident(self, request: Request) -> str | None:  # type: ignore[override]
        if request.user and request.user.is_authenticated:
            return None
        return client_ip(request)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Describes `Authorization: Api-Key <key>` in the OpenAPI schema (registered on import)."""

    target_class = ApiKeyAuthentication
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": f"Client apps: `{KEYWORD} <key>` (from `manage.py create_app`).",
        }


class AnalystTokenScheme(OpenApiAuthenticationExtension):
    """Describes `Authorization: Token <token>` (django-rest-knox) in the OpenAPI schema."""

    target_class = AnalystTokenAuthentication
    name = "tokenAuth"
    priority = 1  # over drf-spectacular's own description of knox

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Analysts: `Token <token>` (from `manage.py create_analyst`).",
        }
