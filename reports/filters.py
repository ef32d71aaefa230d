"""Filters of `GET /api/events/`: each maps to an equality (or range) on an indexed column."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import django_filters
from django import forms
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_field

from events.models import Event, Family
from events.selectors import through_site_indexes

INTERACTION = Family.INTERACTION.value
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EPOCH = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_instant(value: str) -> float:
    """Epoch seconds of `value`: a number of epoch seconds, or ISO 8601 (naive means UTC).

    Raises ValueError with a message for the client.
    """
    text = value.strip()
    if _EPOCH.fullmatch(text):
        seconds = float(text)
        if not math.isfinite(seconds):
            raise ValueError(f"{value!r} is out of range")
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        hint = " (a '+' in a URL means a space: write the offset as %2B or use 'Z')" if " " in text else ""
        raise ValueError(f"{value!r} is neither epoch seconds nor an ISO 8601 date-time{hint}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class InstantField(forms.Field):
    def to_python(self, value: object) -> float | None:
        if value in self.empty_values:
            return None
        try:
            return parse_instant(str(value))
        except ValueError as error:
            # As a parameter: django-filter %-formats messages, and ours may contain '%'.
            raise forms.ValidationError("%(reason)s", code="invalid", params={"reason": str(error)}) from None


class InstantFilter(django_filters.Filter):
    field_class = InstantField


SINCE = "Events at or after this time: epoch seconds (e.g. `1429026445.25`) or ISO 8601 (naive means UTC)."
UNTIL = "Events before this time (exclusive): epoch seconds or ISO 8601 (naive means UTC)."


def instant_filter(lookup_expr: str, label: str, help_text: str) -> InstantFilter:
    schema = {"type": "string", "example": "2021-01-01T09:15:00Z", "description": help_text}
    return extend_schema_field(schema)(
        InstantFilter(field_name="ts", lookup_expr=lookup_expr, label=label, help_text=help_text)
    )


class EventFilter(django_filters.FilterSet):
    site = django_filters.CharFilter(
        field_name="site_id", label="Site", help_text="Site: chat `site_id`, xmpp `channel`, host."
    )
    session = django_filters.CharFilter(
        method="filter_session",
        label="Session or room",
        help_text="xmpp `room_id` or interaction `session_id` (UUIDs in any case).",
    )
    family = django_filters.ChoiceFilter(choices=Family.choices, label="Family", help_text="Event family.")
    type = django_filters.CharFilter(
        field_name="kind",
        label="Type",
        help_text="Event type: chat `message`/`status`, the xmpp `event` (e.g. `muc-broadcast-message`), "
        "the interaction `name`.",
    )
    category = django_filters.CharFilter(label="Category", help_text="Interaction `category`, e.g. `page interaction`.")
    name = django_filters.CharFilter(
        method="filter_name",
        label="Interaction name",
        help_text="Interaction `name` (implies `family=interaction`), e.g. `pageview`.",
    )
    actor = django_filters.CharFilter(label="Actor", help_text="Chat `from` or xmpp `nick`.")
    since = instant_filter("gte", "Since (inclusive)", SINCE)
    until = instant_filter("lt", "Until (exclusive)", UNTIL)

    class Meta:
        model = Event
        fields: list[str] = []  # all declared above

    def filter_queryset(self, queryset: QuerySet[Event]) -> QuerySet[Event]:
        queryset = super().filter_queryset(queryset)
        given = {name for name, value in self.form.cleaned_data.items() if value not in (None, "")}
        if given & {"actor", "type", "name", "category"} and not given & {"site", "session"}:
            queryset = through_site_indexes(queryset)
        return queryset

    def filter_session(self, queryset: QuerySet[Event], name: str, value: str) -> QuerySet[Event]:
        # Interaction sessions are stored as lowercase UUIDs; xmpp rooms as sent.
        sessions = {value, value.lower()} if _UUID.fullmatch(value) else {value}
        # `session <> ''` repeats the partial index's condition, so PostgreSQL may use it.
        return queryset.filter(session__in=sorted(sessions)).exclude(session="")

    def filter_name(self, queryset: QuerySet[Event], name: str, value: str) -> QuerySet[Event]:
        return queryset.filter(family=INTERACTION, kind=value)
