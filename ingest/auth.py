"""Who may call the API: client apps with an API key, analysts with a token or session."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from ingest.keys import application_for_key
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
        app = application_for_key(header[1].decode("latin-1"))
        if app is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return AppPrincipal(app), app

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


class AnalystTokenAuthentication(KnoxTokenAuthentication):
    """`Authorization: Token <token>` for analysts (ingest.analysts): stored as a digest,
    revoked by deleting it, refused after its expiry."""


def request_app(request: Request) -> Application | None:
    return request.auth if isinstance(request.auth, Application) else None


class IsApp(permissions.BasePermission):
    message = "This endpoint is for client apps: send 'Authorization: Api-Key <key>'."

    def has_permission(self, request: Request, view: object) -> bool:
        return request_app(request) is not None


class IsAnalyst(permissions.BasePermission):
    """A signed-in user (token or admin session); app keys cannot read analyses."""

    message = "Analysts only: use a user token ('Authorization: Token <token>') or an admin session."

    def has_permission(self, request: Request, view: object) -> bool:
        return isinstance(request.user, AbstractBaseUser) and request.user.is_active


class IsAppOrAnalyst(permissions.BasePermission):
    message = "Send an app key ('Authorization: Api-Key <key>') or an analyst token."

    def has_permission(self, request: Request, view: object) -> bool:
        return IsApp().has_permission(request, view) or IsAnalyst().has_permission(request, view)


def client_ip(request: HttpRequest | Request) -> str:
    """The caller's address, for throttles and admin login lockouts: the address the last
    NUM_PROXIES trusted proxies saw (X-Forwarded-For is a client's to forge beyond them)."""
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = forwarded.split(",")
        return hops[-min(proxies, len(hops))].strip()
    return request.META.get("REMOTE_ADDR", "")


class FailOpenThrottle(throttling.SimpleRateThrottle):
    """A rate per caller, counted in the cache (Redis in production). If the cache is
    unreachable the request is let through: a throttle must not turn a Redis outage
    into refused posts (SPEC §7: posts are still answered 202 while the broker is down)."""

    def get_rate(self) -> str | None:
        # Read at call time (DRF binds rates at import), so settings changes apply.
        return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get(self.scope)

    def allow_request(self, request: Request, view: object) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as error:  # redis-py, pylibmc... each raise their own
            logger.warning("throttle %s not applied: the cache is unavailable (%s)", self.scope, error)
            return True


class AppRateThrottle(FailOpenThrottle):
    """Per-app request rate (`APP_THROTTLE_RATE`)."""

    scope = "app"

    def get_cache_key(self, request: Request, view: object) -> str | None:
        app = request_app(request)
        return None if app is None else self.cache_format % {"scope": self.scope, "ident": app.pk}


class AnalystRateThrottle(FailOpenThrottle):
    """Per-user request rate of analysts (`ANALYST_THROTTLE_RATE`), by token or session."""

    scope = "analyst"

    def get_cache_key(self, request: Request, view: object) -> str | None:
        user = request.user
        if not isinstance(user, AbstractBaseUser):
            return None
        return self.cache_format % {"scope": self.scope, "ident": user.pk}


class AnonymousRateThrottle(FailOpenThrottle):
    """Per-address rate of callers without credentials (`ANON_THROTTLE_RATE`): health, schema, docs."""

    scope = "anon"

    def get_cache_key(self, request: Request, view: object) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}


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
