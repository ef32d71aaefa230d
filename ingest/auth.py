"""Who may call the API: client apps with an API key, analysts with a token or session."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from ingest.keys import application_for_key
from ingest.models import Application

KEYWORD = "Api-Key"


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


class AppRateThrottle(throttling.SimpleRateThrottle):
    """Per-app request rate (`APP_THROTTLE_RATE`); analysts are not throttled here."""

    scope = "app"

    def get_rate(self) -> str | None:
        # Read at call time (DRF binds rates at import), so settings changes apply.
        return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get(self.scope)

    def get_cache_key(self, request: Request, view: object) -> str | None:
        app = request_app(request)
        return None if app is None else self.cache_format % {"scope": self.scope, "ident": app.pk}


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
