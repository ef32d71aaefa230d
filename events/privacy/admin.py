"""The erasure audit, and the form that erases an actor (staff with privacy.forget_actor only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse

from events.privacy.models import ActorBlock, Erasure
from events.privacy.serializers import PERMISSION
from events.privacy.services import ErasureRefused, check_request, forget_actor

ADD_FIELDS = ("actor", "site", "suppress", "reason")


class ForgetForm(forms.ModelForm):
    """What `manage.py forget_actor` takes. The actor id is used, never stored."""

    actor = forms.CharField(
        max_length=255, strip=False, help_text="The actor id, exactly: a chat 'from' or an xmpp 'nick'."
    )
    suppress = forms.BooleanField(required=False, help_text="Also refuse the actor's future records.")
    reason = forms.CharField(
        max_length=ActorBlock._meta.get_field("reason").max_length,
        required=False,
        help_text="With suppress: shown with each refused record; must not contain the actor id.",
    )

    class Meta:
        model = Erasure
        fields = ("site",)

    def clean(self) -> dict:
        data = super().clean()
        if data.get("reason") and not data.get("suppress"):
            raise forms.ValidationError("A reason goes with suppress.")
        if "actor" in data:
            try:
                check_request(data["actor"], data.get("site") or None, data.get("reason", ""))
            except ErasureRefused as error:
                raise forms.ValidationError(str(error)) from None
        return data


@admin.register(Erasure)
class ErasureAdmin(admin.ModelAdmin):
    """The audit: that erasures happened, when, by whom, how much; adding one runs it."""

    list_display = ("id", "requested_at", "finished_at", "via", "requested_by", "scope", "suppressed", "events",
                    "rejections", "batches", "sites", "rooms")  # fmt: skip
    list_filter = ("via", "suppressed")
    readonly_fields = ("requested_at", "finished_at", "via", "requested_by", "site", "suppressed", "events",
                       "rejections", "batches", "sites", "rooms")  # fmt: skip

    @admin.display(description="site")
    def scope(self, obj: Erasure) -> str:
        return obj.site or "(every site)"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_staff and request.user.has_perm(PERMISSION)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return super().has_view_permission(request, obj) or self.has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the audit stays

    def get_form(self, request: HttpRequest, obj: Erasure | None = None, change: bool = False, **kwargs: object):
        if obj is None:
            kwargs.update(form=ForgetForm, fields=ADD_FIELDS)
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Erasure | None = None) -> tuple[str, ...]:
        return ADD_FIELDS if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Erasure | None = None) -> tuple[str, ...]:
        return () if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Erasure, form: ForgetForm, change: bool) -> None:
        data = form.cleaned_data
        try:
            erasure = forget_actor(
                data["actor"],
                site=data["site"] or None,
                suppress=data["suppress"],
                reason=data["reason"],
                via=Erasure.Via.ADMIN,
                requested_by=request.user.get_username(),
            )
        except ErasureRefused as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        obj.__dict__.update({f.attname: getattr(erasure, f.attname) for f in Erasure._meta.concrete_fields})
        obj._state.adding = False

    def response_add(self, request: HttpRequest, obj: Erasure, post_url_continue: str | None = None) -> HttpResponse:
        if obj.pk is None:  # refused: the message says why
            return self.response_post_save_add(request, obj)
        self.message_user(
            request,
            f"Erasure {obj.pk} done: {obj.events} events, {obj.rejections} rejected records, {obj.batches} request "
            f"bodies; {obj.sites} sites and {obj.rooms} rooms recomputed.",
            messages.SUCCESS,
        )
        return self.response_post_save_add(request, obj)

    def log_addition(self, request: HttpRequest, obj: Erasure, message: object) -> None:
        if obj.pk is not None:
            super().log_addition(request, obj, message)
