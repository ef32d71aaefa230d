"""Output shapes of the read API (the selectors do the querying)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from events.models import Event
from events.timestamps import OUT_OF_RANGE, finite_or_none, utc_moment


class SiteRowSerializer(serializers.Serializer):
    site_id = serializers.CharField()
    messages = serializers.IntegerField(help_text="Messages while an operator was online (chats).")
    emails = serializers.IntegerField(help_text="Messages while no operator was online.")
    operators = serializers.IntegerField(help_text="Distinct senders of status events.")
    visitors = serializers.IntegerField(help_text="Distinct senders of messages.")
    stale = serializers.BooleanField(help_text="Counters wait for a rebuild after a bulk import.")
    refreshed_at = serializers.DateTimeField(allow_null=True)


class SiteSummarySerializer(serializers.Serializer):
    refreshed_at = serializers.DateTimeField(allow_null=True, help_text="The latest refresh of any site.")
    stale_sites = serializers.IntegerField(help_text="Sites whose counters wait for a rebuild.")
    sites = SiteRowSerializer(many=True, help_text="In code-point order of site_id.")


class RoomRowSerializer(serializers.Serializer):
    room_id = serializers.CharField()
    events = serializers.IntegerField(help_text="Distinct events.")
    messages = serializers.IntegerField(help_text="muc-broadcast-message events with a non-empty body.")
    typing = serializers.IntegerField(help_text="muc-broadcast-message events with a `composing` chat state.")
    participants = serializers.IntegerField(help_text="Distinct non-empty nicks.")
    first = serializers.FloatField(allow_null=True, help_text="Epoch seconds of the first event.")
    last = serializers.FloatField(allow_null=True, help_text="Epoch seconds of the last event.")
    stale = serializers.BooleanField()
    refreshed_at = serializers.DateTimeField(allow_null=True)


class RoomTotalsSerializer(serializers.Serializer):
    rooms = serializers.IntegerField()
    events = serializers.IntegerField()
    avg_events_per_room = serializers.FloatField()


class RoomSummarySerializer(serializers.Serializer):
    refreshed_at = serializers.DateTimeField(source="totals.refreshed_at", allow_null=True)
    stale_rooms = serializers.IntegerField(source="totals.stale_rooms")
    totals = RoomTotalsSerializer()
    rooms = RoomRowSerializer(many=True, help_text="In code-point order of room_id.")


def iso_utc(ts: float) -> str:
    """ISO 8601 in UTC with microseconds (fixed width, so the strings sort as times do);
    OUT_OF_RANGE for a time no date-time holds (events/timestamps.py)."""
    moment = utc_moment(ts)
    return OUT_OF_RANGE if moment is None else moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@extend_schema_field(OpenApiTypes.DATETIME)
class IsoTimeField(serializers.Field):
    def to_representation(self, value: float) -> str:
        return iso_utc(value)


class EpochField(serializers.FloatField):
    """Epoch seconds as stored; null for an infinite or NaN one, which JSON cannot hold."""

    def to_representation(self, value: float) -> float | None:
        return finite_or_none(super().to_representation(value))


class EventSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="uid", help_text="The event's identity (its `id`, or a content hash).")
    type = serializers.CharField(source="kind", help_text="message/status, the xmpp `event`, the interaction name.")
    site = serializers.CharField(source="site_id")
    time = IsoTimeField(
        source="ts",
        help_text=f"The event's timestamp in UTC; `{OUT_OF_RANGE}` for one past 9999-12-31 (only an old import "
        "can have stored one), whose `epoch` is as stored.",
    )
    epoch = EpochField(
        source="ts", allow_null=True, help_text="The same timestamp in epoch seconds (null only for an infinite one)."
    )
    client_epoch = EpochField(
        source="client_timestamp",
        allow_null=True,
        help_text="The timestamp as the client sent it (epoch seconds) when `time` was corrected for the "
        "client's clock by its send time (`sentAt` or `X-Sent-At`); null when taken as given.",
    )
    payload = serializers.JSONField(help_text="The record as received.")

    class Meta:
        model = Event
        fields = [
            "id", "family", "type", "category", "site", "session", "actor", "time", "epoch", "client_epoch", "online",
            "payload",
        ]  # fmt: skip
        read_only_fields = fields
