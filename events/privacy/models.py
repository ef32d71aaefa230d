"""Erasure of an actor's data (SPEC §10): the audit of each erasure, and the actors whose
records must not be stored, held only as a keyed hash of their id (events/privacy/blocks.py)."""

from django.db import models


class Erasure(models.Model):
    """That an erasure happened, when, at whose request and in what scope; never whose data.

    The counts say how much was erased (rows, not what they held).
    """

    class Via(models.TextChoices):
        CLI = "cli", "command line"
        API = "api", "API"
        ADMIN = "admin", "admin"

    requested_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    via = models.CharField(max_length=8, choices=Via.choices)
    requested_by = models.CharField(max_length=150, blank=True, default="")  # the staff user; empty from the CLI
    site = models.CharField(max_length=255, blank=True, default="", help_text="Empty: every site.")
    suppressed = models.BooleanField(default=False, help_text="Future records of the actor are refused.")
    events = models.BigIntegerField(default=0)
    rejections = models.BigIntegerField(default=0)
    batches = models.BigIntegerField(default=0, help_text="Stored request bodies the actor's records were cut from.")
    sites = models.BigIntegerField(default=0, help_text="Site summaries recomputed.")
    rooms = models.BigIntegerField(default=0, help_text="Room summaries recomputed.")

    class Meta:
        ordering = ["-requested_at"]
        permissions = [("forget_actor", "Can erase an actor's data (GDPR Art. 17)")]

    def __str__(self) -> str:
        return f"erasure {self.pk} of {self.requested_at:%Y-%m-%d %H:%M} UTC"


class ActorBlock(models.Model):
    """Records that must not be stored: those of the actor whose keyed hash is `actor_key`,
    on `site` (empty: any site).

    A *fence* (`received_before` set) covers the records received before an erasure that
    were not stored yet (the outbox, a batch a worker holds); a *suppression*
    (`received_before` empty) covers every record from then on, refused with `reason`.
    """

    actor_key = models.CharField(max_length=64)  # HMAC-SHA256 (hex) of the actor id: events/privacy/blocks.py
    site = models.CharField(max_length=255, blank=True, default="")
    received_before = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["actor_key", "site"],
                condition=models.Q(received_before__isnull=True),
                name="actor_block_one_suppression",
            )
        ]

    def __str__(self) -> str:
        kind = "suppression" if self.received_before is None else "fence"
        return f"{kind} {self.actor_key[:12]}… on {self.site or 'every site'}"
