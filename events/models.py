"""The event store: every accepted, de-duplicated event of every family."""

import orjson
from django.db import models


class Family(models.TextChoices):
    CHAT = "chat", "chat"
    XMPP = "xmpp", "xmpp log"
    INTERACTION = "interaction", "interaction"


class Site(models.Model):
    """A site as its clients name it: chat `site_id`, xmpp `channel`, interaction host."""

    code = models.CharField(max_length=255, primary_key=True)
    first_seen = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Event(models.Model):
    # The identity of SPEC §2.4: the record's `id`, or a hash of its canonical content.
    # Unique through the id registry (`EventIdentity`), which every writer claims an id in
    # before storing its event: on PostgreSQL the table is partitioned by `ts`, and a unique
    # index there would have to hold the partition key (events/identity.py).
    uid = models.CharField(max_length=255)
    family = models.CharField(max_length=16, choices=Family.choices)
    # chat: message/status; xmpp: the `event` name; interaction: the `name`.
    kind = models.CharField(max_length=255)
    # interaction `category`; empty for the other families.
    category = models.CharField(max_length=255, blank=True, default="")
    # Indexed below as (site, ts, id), which also serves every lookup by site alone. No
    # database constraint: every writer inserts the sites of its events first, in the same
    # transaction, and Django's PROTECT keeps a site with events from being deleted; the
    # constraint's check, one lookup and row lock per stored event at commit, was a third
    # of the time to store a group of events.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="events", db_index=False, db_constraint=False)
    # xmpp `room_id` or interaction `session_id`; empty for chat.
    session = models.CharField(max_length=255, blank=True, default="")
    # chat `from` or xmpp `nick`; empty for interactions.
    actor = models.CharField(max_length=255, blank=True, default="")
    # Epoch seconds; a float keeps chat timestamps exact enough to order ties. For a record
    # sent with its client's send time, the time by the server's clock (events/clock.py).
    ts = models.FloatField()
    # The timestamp as the client sent it, when `ts` was corrected for the client's clock;
    # NULL (no bytes stored) for every record taken as given.
    client_timestamp = models.FloatField(null=True, blank=True)
    # A chat status: True for "online", False for "offline"; NULL otherwise.
    online = models.BooleanField(null=True)
    # The record's JSON text exactly as received (unknown fields, key order and number
    # spelling kept): exports give it back byte for byte, and storing it costs no JSON
    # parse in the database. PostgreSQL can still query it as `raw::jsonb`.
    raw = models.TextField()
    # Provenance; no index: nothing looks events up by batch on a hot path. No database
    # constraint either: every writer creates the batch first, in the same transaction,
    # and Django's PROTECT keeps batches from being deleted under their events; a
    # constraint would only cost a lookup per stored event.
    batch = models.ForeignKey(
        "ingest.RawBatch", on_delete=models.PROTECT, related_name="events", db_index=False, db_constraint=False
    )
    line = models.PositiveBigIntegerField()  # files past 2**31 lines exist

    class Meta:
        indexes = [
            # A site's events in the read API's (ts, id) order: a keyset scan, however quiet the site.
            models.Index(fields=["site", "ts", "id"], name="event_site_ts_id"),
            models.Index(fields=["site", "family", "kind", "ts"], name="event_site_kind_ts"),
            models.Index(fields=["site", "actor", "ts"], name="event_site_actor_ts"),
            # Partial: chat events have no session and would only bloat it.
            models.Index(fields=["session", "ts"], name="event_session_ts", condition=~models.Q(session="")),
            models.Index(fields=["ts", "id"], name="event_ts_id"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(ts__gte=0), name="event_ts_not_negative"),
            models.CheckConstraint(condition=models.Q(family__in=[f.value for f in Family]), name="event_family_known"),
        ]

    def __str__(self) -> str:
        return f"{self.family}/{self.kind} {self.uid}"

    @property
    def payload(self) -> dict:
        """The record as a JSON object (it was parsed by the same decoder when accepted)."""
        return orjson.loads(self.raw)


class Stanza(models.Model):
    """The queryable fields parsed from an xmpp event's XML stanza."""

    # No database constraint: a foreign key to the partitioned event table (PostgreSQL) would
    # need its partition key. Every writer stores the event first, in the same transaction,
    # and Django's CASCADE deletes the stanza with its event.
    event = models.OneToOneField(Event, on_delete=models.CASCADE, primary_key=True, db_constraint=False)
    element = models.CharField(max_length=16)  # message / presence / iq
    type = models.CharField(max_length=64, blank=True, default="")
    from_jid = models.CharField(max_length=1024, blank=True, default="")
    to_jid = models.CharField(max_length=1024, blank=True, default="")
    body = models.TextField(blank=True, default="")
    chat_state = models.CharField(max_length=16, blank=True, default="")
    unavailable = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["element", "chat_state"], name="stanza_element_state")]

    def __str__(self) -> str:
        return f"<{self.element}> of event {self.event_id}"


class EventIdentity(models.Model):
    """The id registry: every event id ever stored, pruned ones included (events/identity.py).

    The identity of SPEC §2.4 across all of the event table's partitions and the pruned
    baseline: a writer claims its events' ids here first (`INSERT … ON CONFLICT DO NOTHING`)
    and stores the events of the ids it claimed only. `ts` is the stored event's time, so
    that a look-up by id reaches its month's partition and its (ts, id) index.
    """

    uid = models.CharField(max_length=255, primary_key=True)
    ts = models.FloatField()

    def __str__(self) -> str:
        return self.uid


class PrunedEvent(models.Model):
    """What is kept of an event `prune_events` removed (events/retention.py): its identity, so
    that a resend stays a duplicate, and the fields the site summary's rules read, so that
    summaries stay exact for everything ever ingested. The payload (`raw`) and provenance go.

    One row per pruned event, statuses and messages alike: ordering statuses needs their
    id, and a message's identity is its id anyway, so counts per (site, ts, actor) would
    be no smaller (float timestamps make nearly every key unique) and erasure needs the
    actor of each.
    """

    uid = models.CharField(max_length=255)
    family = models.CharField(max_length=16, choices=Family.choices)
    kind = models.CharField(max_length=255)
    # Site.code, without a foreign key (as Event.site): no lookup per pruned row.
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False)
    actor = models.CharField(max_length=255, blank=True, default="")
    ts = models.FloatField()
    online = models.BooleanField(null=True)

    class Meta:
        indexes = [
            # The same lookups as the event store's indexes of the same names serve.
            models.Index(fields=["site", "family", "kind", "ts"], name="pruned_site_kind_ts"),
            models.Index(fields=["site", "actor", "ts"], name="pruned_site_actor_ts"),
        ]
        constraints = [models.UniqueConstraint(fields=["uid"], name="pruned_uid_unique")]

    def __str__(self) -> str:
        return f"pruned {self.family}/{self.kind} {self.uid}"
