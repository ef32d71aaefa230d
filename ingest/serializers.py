from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ingest.models import RawBatch, Rejection
from ingest.selectors import REJECTIONS_SHOWN, batch_rejections


class RejectionSerializer(serializers.ModelSerializer):
    raw = serializers.CharField(source="preview", help_text="The record as received (its start, if long).")

    class Meta:
        model = Rejection
        fields = ["line", "reason", "raw"]


class BatchSerializer(serializers.ModelSerializer):
    rejections = serializers.SerializerMethodField(help_text=f"The first {REJECTIONS_SHOWN} kept, by line.")
    rejections_not_kept = serializers.SerializerMethodField(
        help_text="Rejected records counted but not kept: a batch keeps its first MAX_STORED_REJECTIONS."
    )
    last_error = serializers.CharField(
        help_text="Why the last processing attempt failed (empty if none did); a `failed` batch waits for "
        "`manage.py retry_failed`."
    )

    class Meta:
        model = RawBatch
        fields = [
            "id", "status", "source", "record_count", "accepted", "duplicates", "rejected", "attempts",
            "created_at", "processed_at", "last_error", "rejections", "rejections_not_kept",
        ]  # fmt: skip

    @extend_schema_field(RejectionSerializer(many=True))
    def get_rejections(self, batch: RawBatch) -> list[dict]:
        return RejectionSerializer(batch_rejections(batch), many=True).data

    def get_rejections_not_kept(self, batch: RawBatch) -> int:
        return max(0, batch.rejected - batch.rejections.count()) if batch.rejected else 0


class BatchAcceptedSerializer(serializers.Serializer):
    batch_id = serializers.IntegerField()
    records = serializers.IntegerField(help_text="Records found in the body (not yet validated).")
    status = serializers.CharField()
    status_url = serializers.CharField()


class HealthSerializer(serializers.Serializer):
    """What /api/health/ answers (the schema of it; the report is built in ingest.health)."""

    status = serializers.ChoiceField(choices=["ok", "degraded", "down"])
    database = serializers.DictField(required=False, help_text="Staff only: `ok`, `vendor`, `error`.")
    broker = serializers.DictField(
        required=False, help_text="Staff only: `ok`, `transport`, `queue`, `queue_depth`, `error`."
    )
    batches = serializers.DictField(
        required=False,
        help_text="Staff only: `unfinished`, `oldest_unfinished_at`, `oldest_unfinished_age_seconds`.",
    )
    checked_at = serializers.DateTimeField(required=False, help_text="Staff only: when the report was made.")
