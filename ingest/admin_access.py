"""Admin of who may call the API: client apps with their keys, analysts' tokens.

A new key or token is shown once, on the page that answers the add form: never
in a message (Django keeps messages in a readable cookie) nor in a URL. Only
digests are stored.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from knox.models import AuthToken, get_digest_token
from knox.settings import CONSTANTS

from ingest.keys import set_new_key
from ingest.models import AnalystToken, Application


class SecretShownOnceMixin:
    """Add forms answer with a page showing the new secret (set by `save_model` on `obj.new_secret`)."""

    secret_label = "Secret"

    def response_add(self, request: HttpRequest, obj: object, post_url_continue: str | None = None) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "object": obj,
            "title": f"{self.secret_label} created",
            "what": self.secret_label,
            "owner": self.secret_owner(obj),
            "secret": obj.new_secret,
        }
        response = TemplateResponse(request, "admin/ingest/secret_once.html", context)
        response["Cache-Control"] = "no-store"
        return response

    def secret_owner(self, obj: object) -> str:
        return str(obj)


@admin.register(Application)
class ApplicationAdmin(SecretShownOnceMixin, admin.ModelAdmin):
    """Creating an app generates its key and shows it once; only its hash is stored."""

    secret_label = "API key"
    list_display = ("name", "key_prefix", "created_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "key_prefix")
    ordering = ("name",)
    actions = ["revoke"]
    readonly_fields = ("key_prefix", "created_at", "revoked_at")

    def get_fields(self, request: HttpRequest, obj: Application | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "allowed_sites")
        return ("name", "allowed_sites", "key_prefix", "created_at", "revoked_at")

    def has_delete_permission(self, request: HttpRequest, obj: Application | None = None) -> bool:
        # Batches keep pointing at their app: revoke instead.
        return False

    def save_model(self, request: HttpRequest, obj: Application, form: object, change: bool) -> None:
        if not change:
            obj.new_secret = set_new_key(obj)
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected apps", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} app(s).", messages.SUCCESS)


if admin.site.is_registered(AuthToken):  # knox's own admin lists digests and puts new tokens in messages
    admin.site.unregister(AuthToken)


@admin.register(AnalystToken)
class AnalystTokenAdmin(SecretShownOnceMixin, admin.ModelAdmin):
    """Analysts' API tokens: made here or by `manage.py create_analyst`; deleting one revokes it."""

    secret_label = "API token"
    list_display = ("token_key", "user", "created", "expiry")
    list_filter = (("expiry", admin.EmptyFieldListFilter),)
    search_fields = ("token_key", "user__username")
    ordering = ("-created",)
    list_select_related = ("user",)
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: AnalystToken | None = None) -> tuple[str, ...]:
        return ("user", "expiry") if obj is None else ("user", "token_key", "created", "expiry")

    def get_readonly_fields(self, request: HttpRequest, obj: AnalystToken | None = None) -> tuple[str, ...]:
        return () if obj is None else ("user", "token_key", "created")

    def save_model(self, request: HttpRequest, obj: AnalystToken, form: object, change: bool) -> None:
        if not change:
            obj.digest, obj.new_secret = get_digest_token()
            obj.token_key = obj.new_secret[: CONSTANTS.TOKEN_KEY_LENGTH]
        super().save_model(request, obj, form, change)

    def secret_owner(self, obj: AnalystToken) -> str:
        return str(obj.user)

    @admin.action(description="Revoke selected tokens", permissions=["delete"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        count, _ = queryset.delete()
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # "revoke" says what deleting a token means
        return actions
