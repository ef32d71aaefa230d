from rest_framework import serializers

from events.privacy.models import ActorBlock, Erasure

PERMISSION = "privacy.forget_actor"


class ForgetRequestSerializer(serializers.Serializer):
    actor = serializers.CharField(
        max_length=255, trim_whitespace=False, help_text="The actor id, exactly: a chat `from` or an xmpp `nick`."
    )
    site = serializers.CharField(
        max_length=255, required=False, trim_whitespace=False,
        help_text="Only this site's records (chat `site_id`, xmpp `channel`); leave out for every site.",
    )  # fmt: skip
    suppress = serializers.BooleanField(default=False, help_text="Also refuse the actor's future records.")
    reason = serializers.CharField(
        max_length=ActorBlock._meta.get_field("reason").max_length, required=False, default="", allow_blank=True,
        help_text="With `suppress`: shown with each refused record; must not contain the actor id.",
    )  # fmt: skip


class ErasureSerializer(serializers.ModelSerializer):
    class Meta:
        model = Erasure
        fields = [
            "id", "requested_at", "finished_at", "via", "requested_by", "site", "suppressed", "events", "rejections",
            "batches", "sites", "rooms",
        ]  # fmt: skip
