"""Finding the import job of a file: resume it, or start a new one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from django.db import IntegrityError, transaction

from ingest.imports.identity import bytes_before, fingerprint, window_hash
from ingest.models import ImportJob


@dataclass(frozen=True, slots=True)
class Found:
    job: ImportJob
    before: bytes  # the stream's bytes before the job's checkpoint (the stream is positioned there)
    notice: str | None  # why a file that starts like an imported one is imported anew


def find_job(path: str, stream: BinaryIO) -> Found:
    """The job of the file whose (decompressed) bytes `stream` reads, positioned at its checkpoint.

    Among the jobs of files with the same first MiB, the one whose checkpoint the
    stream's bytes before it prove; none: a new job, from the start.
    """
    path = os.path.abspath(path)
    key = fingerprint(path)
    for _ in range(3):  # a concurrent run may create the new job first: then it is found
        candidates = list(ImportJob.objects.filter(fingerprint=key).order_by("-generation"))
        notice = None
        for job in candidates:
            if (before := _proof(job, stream)) is not None:
                return Found(job, before, None)
            notice = (
                f"{path}: starts like {job.path} (import {job.pk}) but is not that file: its bytes before"
                f" that import's checkpoint at byte {job.next_offset:,} differ; importing it from the start"
                " as a new file (records already stored count as duplicates)"
            )
        try:
            with transaction.atomic():
                job = ImportJob.objects.create(fingerprint=key, generation=len(candidates), path=path)
        except IntegrityError:
            continue
        stream.seek(0)
        return Found(job, b"", notice)
    raise RuntimeError(f"{path}: could not find or create its import job")


def matching_job(path: str) -> ImportJob | None:
    """The job of a plain file, if it has one (without creating any)."""
    key = fingerprint(path)
    with open(path, "rb") as stream:
        for job in ImportJob.objects.filter(fingerprint=key).order_by("-generation"):
            if _proof(job, stream) is not None:
                return job
    return None


def _proof(job: ImportJob, stream: BinaryIO) -> bytes | None:
    """The stream's bytes before the job's checkpoint if they are the ones the job stored the hash of."""
    before = bytes_before(stream, job.next_offset)
    # An empty hash: a job from before hashes were kept, recognised by its first MiB alone.
    return before if before is not None and job.checkpoint_hash in ("", window_hash(before)) else None
