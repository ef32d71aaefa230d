"""The write path's records: client apps, raw batches (the outbox and the
provenance of stored chunks), rejections, import checkpoints and the ranges of
parallel imports."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from knox.models import AuthToken

from ingest.imports.identity import EMPTY_WINDOW
from ingest.records import RejectedRecord, reason_rule


class Application(models.Model):
    """A trusted client app. Its API key is shown once; only a hash is kept."""

    name = models.CharField(max_length=100, unique=True)
    key_prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    allowed_sites = models.TextField(
        blank=True,
        default="",
        help_text="Site ids this app may write events for, one per line; empty: any site. "
        "A record for another site is rejected with the reason.",
    )

    def __str__(self) -> str:
        return self.name

    def site_allow_list(self) -> frozenset[str] | None:
        """The sites this app may write to, or None when it may write to any."""
        sites = frozenset(line.strip() for line in self.allowed_sites.splitlines() if line.strip())
        return sites or None


class AnalystToken(AuthToken):
    """An analyst's API token as the admin shows it: its first characters, never the token."""

    class Meta:
        proxy = True
        verbose_name = "analyst token"

    def __str__(self) -> str:
        return f"{self.token_key}… of {self.user}"


class ImportJob(models.Model):
    """One file given to `import_jsonl`, with its durable checkpoint.

    A file is looked up by a hash of its first MiB and proven by the hash of the
    bytes before the checkpoint (ingest/imports/identity.py), so rerunning the
    same file (or a longer copy of a log that grew) resumes from `next_offset`,
    and another file that only starts the same way is imported as a new one.
    """

    fingerprint = models.CharField(max_length=64)
    # The how-manieth file with this fingerprint (files that start alike): unique with it.
    generation = models.PositiveIntegerField(default=0)
    path = models.CharField(max_length=4096)
    next_offset = models.BigIntegerField(default=0)  # bytes of the (decompressed) stream
    next_line = models.BigIntegerField(default=1)
    # SHA-256 of the stream's 64 KiB before `next_offset` (empty: not known, from before it was kept).
    checkpoint_hash = models.CharField(max_length=64, blank=True, default=EMPTY_WINDOW)
    accepted = models.BigIntegerField(default=0)
    duplicates = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # While an import that dominates the event table runs without the table's secondary
    # indexes and site foreign key: their definitions, to create them again (ingest/imports/bulk.py).
    deferred_ddl = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["fingerprint", "generation"], name="import_job_file_unique")]

    def __str__(self) -> str:
        return self.path


class Status(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    # Terminal until retried by hand: processing failed repeatedly (`last_error` says why).
    FAILED = "failed"


class ClaimableQuerySet(models.QuerySet):
    """Rows that workers take one at a time: API batches and import ranges."""

    def unfinished(self) -> "ClaimableQuerySet":
        return self.filter(status__in=(Status.PENDING, Status.PROCESSING))

    def claim(self, pk: int) -> bool:
        """Take an unfinished row for processing; False if it is done. Each claim counts an attempt."""
        return bool(
            self.unfinished()
            .filter(pk=pk)
            .update(status=Status.PROCESSING, attempts=models.F("attempts") + 1, claimed_at=timezone.now())
        )


class RawBatch(models.Model):
    """Records as received: an API request body (the outbox), or the provenance row of
    a chunk of an imported file (stored done, with its byte range).

    A pending batch is the source of truth until a worker has processed it.
    """

    Status = Status

    app = models.ForeignKey(Application, null=True, blank=True, on_delete=models.PROTECT)
    import_job = models.ForeignKey(ImportJob, null=True, blank=True, on_delete=models.CASCADE)
    source = models.CharField(max_length=4096)  # "api" or the imported file's path
    first_line = models.BigIntegerField(default=1)
    last_line = models.BigIntegerField(default=0)
    byte_start = models.BigIntegerField(null=True, blank=True)
    byte_end = models.BigIntegerField(null=True, blank=True)
    # API bodies only; file chunks are read from the file.
    body = models.BinaryField(blank=True, default=b"")
    content_type = models.CharField(max_length=100, blank=True, default="")
    content_encoding = models.CharField(max_length=32, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    record_count = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # The client's send time for the whole body (the `X-Sent-At` header, in its clock): its
    # records are placed by `created_at`, the receive time (events/clock.py). NULL: not sent.
    sent_at = models.DateTimeField(null=True, blank=True)
    # When a worker last took it: a claim older than PROCESSING_TIMEOUT_SECONDS is taken
    # for lost with its worker (ingest/batches.py). Workers are woken, not sent batches, so
    # there is no "enqueued" time to keep (import ranges have one: ImportRange).
    claimed_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Why the last attempt failed (empty when none did).
    last_error = models.TextField(blank=True, default="")

    objects = ClaimableQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "raw batches"
        indexes = [
            models.Index(
                fields=["created_at"],
                name="rawbatch_pending",
                condition=models.Q(status__in=["pending", "processing"]),
            ),
            # The dashboard counts failed batches; few, and found without a scan.
            models.Index(fields=["created_at"], name="rawbatch_failed", condition=models.Q(status="failed")),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.source})"


class ImportRange(models.Model):
    """A byte range of a file imported in parallel (`import_jsonl --parallel`).

    Workers claim a range and import it in chunks; each chunk commits its events,
    its provenance `RawBatch`, and the range's advanced `next_offset` together, so
    a worker killed mid-range is resumed by the next delivery, counting nothing twice.
    """

    Status = Status

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="ranges")
    byte_start = models.BigIntegerField()
    byte_end = models.BigIntegerField()
    first_line = models.BigIntegerField()
    # Where the next chunk starts: it advances with each committed chunk.
    next_offset = models.BigIntegerField()
    next_line = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    record_count = models.BigIntegerField(default=0)
    accepted = models.BigIntegerField(default=0)
    duplicates = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # When a worker took it or last committed a chunk of it (a heartbeat for the sweeper).
    claimed_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    objects = ClaimableQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "byte_start"], name="import_range_start_unique"),
            models.CheckConstraint(
                condition=models.Q(byte_start__lte=models.F("next_offset"), next_offset__lte=models.F("byte_end")),
                name="import_range_offset_inside",
            ),
        ]

    def __str__(self) -> str:
        return f"range {self.pk} of {self.job.path} [{self.byte_start}, {self.byte_end})"


class Rejection(models.Model):
    """A record that was not accepted, with where it came from and why.

    `raw` is the whole record as received (`complete`) while it is storable text within
    MAX_RECORD_BYTES, or over it within MAX_REJECTED_RECORD_BYTES and its batch's
    MAX_REJECTED_BYTES_PER_BATCH (ingest.records.rejected), so that `replay_rejections` can
    restore it once the cause is fixed; otherwise its first MAX_REJECTED_RAW_CHARS characters
    with bad bytes escaped, which cannot be replayed.
    """

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted", "accepted"  # stored as a new event by the replay
        DUPLICATE = "duplicate", "duplicate"  # valid now, but an event with its identity was stored already

    batch = models.ForeignKey(RawBatch, on_delete=models.CASCADE, related_name="rejections")
    line = models.BigIntegerField()
    reason = models.CharField(max_length=500)
    # The reason without its particulars (ingest.records.reason_rule): what filters and charts group by.
    rule = models.CharField(max_length=500, blank=True, default="")
    raw = models.TextField()
    complete = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set once, by the replay that stored the record (a replay never takes a replayed rejection).
    replayed_at = models.DateTimeField(null=True, blank=True)
    replay_batch = models.ForeignKey(
        RawBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="replayed_rejections"
    )
    replay_line = models.BigIntegerField(null=True, blank=True)  # the record's position in the replay batch
    replay_outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True, default="")
    event_uid = models.CharField(max_length=255, blank=True, default="")  # the identity it was stored under

    class Meta:
        ordering = ["batch_id", "line"]
        indexes = [
            models.Index(fields=["created_at"], name="rejection_created"),
            models.Index(fields=["rule", "created_at"], name="rejection_rule_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(replayed_at__isnull=True) | models.Q(replay_batch__isnull=False, complete=True),
                name="rejection_replayed_whole",
            )
        ]

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"

    @classmethod
    def from_record(cls, batch: RawBatch, record: RejectedRecord) -> "Rejection":
        line, reason, rule, raw, complete = cls.values_of(record)
        return cls(batch=batch, line=line, reason=reason, rule=rule, raw=raw, complete=complete)

    @classmethod
    def values_of(cls, record: RejectedRecord) -> tuple[int, str, str, str, bool]:
        """(line, reason, rule, raw, complete) of a record's rejection: its reason cut to the column."""
        reason = record.reason[: cls._meta.get_field("reason").max_length]
        return record.line, reason, reason_rule(reason), record.raw, record.complete

    @property
    def preview(self) -> str:
        """The start of the record, as shown in lists and the batch API."""
        limit = settings.SWITCHBOARD["MAX_REJECTED_RAW_CHARS"]
        return self.raw if len(self.raw) <= limit else self.raw[:limit] + "…"
