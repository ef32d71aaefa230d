"""Erasing an actor (SPEC §10, GDPR Art. 17): `forget_actor`.

The actor's events (with their stanzas), its rejected records, its records inside stored
request bodies, its rows of the site-actor table and the dashboard's counts of its events
go; the site and room summaries it touched are recomputed by the modules that own their
semantics (reports/site_summary.py, reports/room_summary.py), so they become what they
would be had the actor never sent anything. An `Erasure` row records that it happened.

Order, so that nothing of the actor is stored again meanwhile:

1. one short transaction under the erasure lock (exclusive): the audit row and the block
   (events/privacy/blocks.py): a fence for records received until now, or a suppression for every
   record; storing transactions hold the lock shared and withhold blocked records after it;
2. the affected sites and rooms are found (one scan of the event table by actor; by the
   (site, actor) index with a site) and marked stale, so that readers see they are moving;
3. events, rejections and bodies are erased in transactions of `ROWS` rows each;
4. the summaries are rebuilt; a last transaction under the lock drops the summary and site
   rows left with no events, and the fences no unfinished batch needs any more.

A run that is killed leaves the block in force; running the command again finishes the work.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from config.hostile import not_text_reason
from events import identity
from events.db import chunked, update_rows
from events.models import Event, Family, PrunedEvent, Site, Stanza
from events.privacy import blocks
from events.privacy.matching import CUT_TYPE, ActorRecords, cut_records
from events.privacy.models import ActorBlock, Erasure
from events.registry import control_character
from ingest.body import decode_body
from ingest.models import ImportJob, RawBatch, Rejection
from reports import event_counts, room_summary, site_summary
from reports.models import EventCount, OnlineSpan, RoomSummary, SiteActor, SiteSummary

logger = logging.getLogger(__name__)

ROWS = 1000  # events or rejections erased per transaction
BODIES = 10  # request bodies read per query (each up to MAX_BODY_BYTES)
FAMILIES_WITH_ACTORS = (Family.CHAT, Family.XMPP)  # interaction events have no actor (SPEC §2)
MAX_REASON = ActorBlock._meta.get_field("reason").max_length


class ErasureRefused(ValueError):
    """The request cannot be carried out as given; the message says why."""


@dataclass
class Affected:
    chat_sites: set[str]
    sites: set[str]  # chat and xmpp sites (xmpp: the channel)
    rooms: set[str]


def forget_actor(
    actor: str,
    *,
    site: str | None = None,
    suppress: bool = False,
    reason: str = "",
    via: str = Erasure.Via.CLI,
    requested_by: str = "",
    progress: Callable[[str], None] | None = None,
) -> Erasure:
    """Erase `actor`'s data (on `site` only, when given); with `suppress`, refuse its future
    records (with `reason`) on every path. Returns the finished audit row."""
    say = progress or (lambda _message: None)
    check_request(actor, site, reason)
    records = ActorRecords(actor, site)
    with transaction.atomic():
        blocks.lock_exclusive()
        erasure = Erasure.objects.create(via=via, requested_by=requested_by, site=site or "", suppressed=suppress)
        _block(actor, site, suppress, reason)
        # Batches claimed from now on read their body without the actor's records.
        erasure.batches = _cut_bodies(records, RawBatch.objects.unfinished())
    say("blocked: nothing more of the actor is stored from now on")
    affected = _affected(actor, site)
    with transaction.atomic():
        site_summary.mark_stale(affected.chat_sites)
        room_summary.mark_stale(affected.rooms)
    erasure.events = _erase_events(actor, affected.sites)
    say(f"{erasure.events} events erased")
    with transaction.atomic():
        SiteActor.objects.filter(actor=actor, site_id__in=affected.chat_sites).delete()
    erasure.rejections = _erase_rejections(records, Rejection.objects.all())
    say(f"{erasure.rejections} rejected records erased")
    erasure.batches += _cut_bodies(records, RawBatch.objects.all())
    say(f"{erasure.batches} stored request bodies cut")
    site_summary.rebuild_sites(affected.chat_sites)
    for part in chunked(sorted(affected.rooms), room_summary.ROOMS_PER_STATEMENT):
        with transaction.atomic():
            room_summary.recompute_rooms(part)
    with transaction.atomic():
        blocks.lock_exclusive()
        # A safety net: rejections stored since the block are read again (the block applies the
        # same rule at store time, so this should find none).
        erasure.rejections += _erase_rejections(records, Rejection.objects.filter(created_at__gte=erasure.requested_at))
        _drop_empty(affected)
        expire_fences()
        erasure.sites, erasure.rooms = len(affected.chat_sites), len(affected.rooms)
        erasure.finished_at = timezone.now()
        erasure.save()
    say(f"{erasure.sites} site and {erasure.rooms} room summaries recomputed")
    return erasure


def check_request(actor: str, site: str | None, reason: str) -> None:
    """Refuse a request that cannot be carried out as given (ErasureRefused says why)."""
    if not actor:
        raise ErasureRefused("give the actor id: a chat 'from' or an xmpp 'nick'")
    for name, value in (("actor", actor), ("site", site or ""), ("reason", reason)):
        if problem := not_text_reason(value):  # stored nowhere, and not even encodable
            raise ErasureRefused(f"the {name} is {problem}")
    for name, value in (("actor", actor), ("site", site or "")):
        if char := control_character(value):  # no stored identifier holds one (events/registry.py)
            raise ErasureRefused(f"the {name} must not contain a control character or line break (U+{ord(char):04X})")
    if site == "":
        raise ErasureRefused("the site must not be empty (leave it out for every site)")
    if len(reason) > MAX_REASON:
        raise ErasureRefused(f"the reason is longer than {MAX_REASON} characters")
    if actor in reason:
        # The reason is stored and shown with every refused record: it must not name the actor.
        raise ErasureRefused("the reason must not contain the actor id (it is stored and shown)")
    if char := control_character(reason):  # nor forge a line where reasons are printed one per line
        raise ErasureRefused(f"the reason must not contain a control character or line break (U+{ord(char):04X})")


def _block(actor: str, site: str | None, suppress: bool, reason: str) -> None:
    key = blocks.actor_key(actor)
    if suppress:
        ActorBlock.objects.update_or_create(
            actor_key=key, site=site or "", received_before=None, defaults={"reason": reason}
        )
    else:
        ActorBlock.objects.create(actor_key=key, site=site or "", received_before=timezone.now())


def _affected(actor: str, site: str | None) -> Affected:
    """The sites and rooms holding the actor's events: one scan by actor, or an index range with a site."""
    events = Event.objects.filter(actor=actor, family__in=FAMILIES_WITH_ACTORS)
    pruned = PrunedEvent.objects.filter(actor=actor, family__in=FAMILIES_WITH_ACTORS)
    if site is not None:
        events, pruned = events.filter(site_id=site), pruned.filter(site_id=site)
    rows = set(events.values_list("family", "site_id", "session").distinct())
    rows |= {(family, site_id, "") for family, site_id in pruned.values_list("family", "site_id").distinct()}
    return Affected(
        chat_sites={s for family, s, _ in rows if family == Family.CHAT},
        sites={s for _, s, _ in rows},
        rooms={room for family, _, room in rows if family == Family.XMPP and room},
    )


def _erase_events(actor: str, site_ids: Iterable[str]) -> int:
    """Delete the actor's events site by site (the (site, actor, ts) index), ROWS per transaction,
    with their stanzas and their share of the dashboard's hourly counts; then what is kept of
    its pruned events (events/retention.py), which the dashboard counts too."""
    erased = 0
    for model in (Event, PrunedEvent):
        for site_id in sorted(site_ids):
            while True:
                with transaction.atomic():
                    # As every transaction writing the event table (events/retention.py, storing
                    # paths): a prune dropping a month takes it exclusively before its table locks,
                    # so it waits for this chunk instead of deadlocking with its read, then delete.
                    blocks.lock_shared()
                    rows = list(
                        model.objects.filter(site_id=site_id, actor=actor, family__in=FAMILIES_WITH_ACTORS).values_list(
                            "id", "ts", "family", "uid"
                        )[:ROWS]
                    )
                    if not rows:
                        break
                    ids = [pk for pk, _, _, _ in rows]
                    if model is Event:
                        Stanza.objects.filter(event_id__in=ids).delete()
                    model.objects.filter(id__in=ids).delete()
                    identity.forget(uid for _, _, _, uid in rows)  # the id registry keeps no id of the actor's
                    _uncount(Counter((event_counts.hour_of(ts), family, site_id) for _, ts, family, _ in rows))
                    erased += len(rows)
    return erased


def _uncount(counts: Counter[tuple[int, str, str]]) -> None:
    """Take erased events out of the dashboard's rollup (rows that reach zero go): the rows of
    each site read once, then one delete and one set-based update, not two statements per hour
    (an operator's 150,000 events spread over thousands of hours took minutes)."""
    for site_id in sorted({site for _, _, site in counts}):
        # Locked as read: this transaction does not hold the erasure lock, so a batch of another
        # actor may be counting in the same rows; its increment must not be written over. In
        # key order, as batches lock them (`event_counts.add_counts`): no deadlock.
        rows = (
            EventCount.objects.select_for_update()
            .filter(
                site=site_id,
                family__in={family for _, family, site in counts if site == site_id},
                hour__in={hour for hour, _, site in counts if site == site_id},
            )
            .order_by("hour", "family")
        )
        gone, kept = [], []
        for row in rows:
            if n := counts.get((row.hour, row.family, site_id)):
                if row.events <= n:
                    gone.append(row.pk)
                else:
                    row.events -= n
                    kept.append(row)
        for part in chunked(gone, ROWS):
            EventCount.objects.filter(pk__in=part).delete()
        update_rows(EventCount, ["events"], kept)


def _erase_rejections(records: ActorRecords, rejections: QuerySet[Rejection]) -> int:
    """Delete the rejected records that are the actor's (events/privacy/matching.py); each of
    `rejections` is read once, in id order, ROWS at a time."""
    erased, after = 0, 0
    while True:
        page = list(rejections.filter(pk__gt=after).order_by("pk").values_list("pk", "raw")[:ROWS])
        if not page:
            return erased
        after = page[-1][0]
        ids = [pk for pk, raw in page if records.matches(raw)]
        if ids:
            with transaction.atomic():
                erased += Rejection.objects.filter(pk__in=ids).delete()[0]


def _cut_bodies(records: ActorRecords, batches: QuerySet[RawBatch]) -> int:
    """Cut the actor's records out of the stored request bodies (API posts, replays) of
    `batches`: each becomes a blank line, so the other records keep their line numbers."""
    cut, after = 0, 0
    limits = settings.SWITCHBOARD
    while True:
        page = list(
            batches.filter(pk__gt=after)
            .exclude(body=b"")
            .order_by("pk")
            .values_list("pk", "body", "content_type", "content_encoding")[:BODIES]
        )
        if not page:
            return cut
        after = page[-1][0]
        for pk, body, content_type, content_encoding in page:
            try:
                decoded = decode_body(bytes(body), content_encoding, limits["MAX_BODY_BYTES"])
                kept = cut_records(decoded, content_type, records.matches, limits["MAX_RECORD_BYTES"])
            except Exception as error:  # a body that no longer decodes: nothing readable to cut
                logger.warning("batch %s: body not read for erasure: %s", pk, error)
                continue
            if kept is not None:
                # Only the body: a worker may be saving this batch's status meanwhile.
                RawBatch.objects.filter(pk=pk).update(body=kept, content_type=CUT_TYPE, content_encoding="")
                cut += 1


def _drop_empty(affected: Affected) -> None:
    """Summary rows of sites and rooms the actor alone had, and sites left with no events
    (under the erasure lock: no storing transaction is adding events to them meanwhile).
    One index probe per site or room (`LIMIT 1`), not a read of their events."""
    events, pruned = Event.objects, PrunedEvent.objects
    gone = sorted(
        s
        for s in affected.chat_sites
        if not events.filter(site_id=s, family=Family.CHAT).exists()
        and not pruned.filter(site_id=s, family=Family.CHAT).exists()
    )
    SiteSummary.objects.filter(site_id__in=gone).delete()
    OnlineSpan.objects.filter(site_id__in=gone).delete()
    rooms = [r for r in affected.rooms if not events.filter(session=r, family=Family.XMPP).exists()]
    RoomSummary.objects.filter(room_id__in=rooms).delete()
    empty = sorted(
        s for s in affected.sites if not events.filter(site_id=s).exists() and not pruned.filter(site_id=s).exists()
    )
    SiteActor.objects.filter(site_id__in=empty).delete()
    Site.objects.filter(code__in=empty).delete()


def expire_fences() -> int:
    """Drop the fences that no unfinished batch received before them needs any more; returns how many."""
    unfinished = RawBatch.objects.filter(
        status__in=(RawBatch.Status.PENDING, RawBatch.Status.PROCESSING, RawBatch.Status.FAILED)
    ).order_by("created_at")
    oldest = unfinished.values_list("created_at", flat=True).first()
    fences = ActorBlock.objects.filter(received_before__isnull=False)
    if oldest is not None:
        fences = fences.filter(received_before__lte=oldest)
    return fences.delete()[0]


def import_running() -> bool:
    """Whether an import may be storing chunks now: it read the blocks when it started."""
    recent = timezone.now() - timedelta(minutes=10)
    return ImportJob.objects.filter(Q(finished_at__isnull=True) & Q(updated_at__gte=recent)).exists()
