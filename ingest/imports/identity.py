"""Recognising a file again, so that a rerun resumes its import instead of starting over.

A file is looked up by the hash of its first MiB (cheap, and the same for a log
that grew), then proven to be the file a job imported by the bytes just before
that job's checkpoint: their hash is stored with every checkpoint, and a rerun
reads only those bytes before going on from there. Another file that merely
starts like an imported one (the same first MiB, different data further on)
does not match and is imported from its start as a new file.

What it cannot see: a file that differs from an imported one only between
its first MiB and the 64 KiB before the checkpoint; proving that would mean
reading all of it again on every rerun, which is what resuming avoids.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import BinaryIO

FINGERPRINT_BYTES = 1 << 20
WINDOW_BYTES = 64 * 1024  # the bytes before a checkpoint whose hash proves the file
KEEP_BYTES = 16 * 1024 * 1024  # read-ahead the framing may have done past a chunk's end, and more


class ConcurrentImport(RuntimeError):
    """Another process is importing the same file."""


def fingerprint(path: str) -> str:
    """The hash of a file's first MiB (as stored on disk): where looking up its import starts."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(FINGERPRINT_BYTES)).hexdigest()


def window_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


EMPTY_WINDOW = window_hash(b"")  # the checkpoint of a file not imported yet


def bytes_before(stream: BinaryIO, offset: int) -> bytes | None:
    """Position `stream` at `offset` and return the (up to WINDOW_BYTES) bytes before it,
    or None if the stream ends before `offset` (then it is not the file that got there)."""
    start = max(0, offset - WINDOW_BYTES)
    stream.seek(start)  # a gzip stream decompresses up to it: resuming one does anyway
    data = stream.read(offset - start)
    return data if len(data) == offset - start else None


class TailKeeper:
    """A stream that keeps the last bytes it read, so that the hash of the bytes before
    any offset the framing has just reached can be taken without reading them again."""

    def __init__(self, stream: BinaryIO, offset: int, before: bytes = b"") -> None:
        self.stream = stream
        self.end = offset  # stream offset after the last byte read
        self.blocks: deque[bytes] = deque([before] if before else [])
        self.kept = len(before)

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if data:
            self.blocks.append(data)
            self.end += len(data)
            self.kept += len(data)
            while self.kept - len(self.blocks[0]) >= KEEP_BYTES:
                self.kept -= len(self.blocks.popleft())
        return data

    def hash_before(self, offset: int) -> str:
        """The hash of the (up to) WINDOW_BYTES bytes before `offset`, which must have been read."""
        start = max(0, offset - WINDOW_BYTES)
        kept_from = self.end - self.kept
        if start < kept_from or offset > self.end:
            raise ValueError(f"bytes [{start}, {offset}) are no longer kept (kept from {kept_from} to {self.end})")
        pieces, block_end = [], self.end
        for block in reversed(self.blocks):
            block_start = block_end - len(block)
            if block_start < offset and block_end > start:
                pieces.append(block[max(start, block_start) - block_start : min(offset, block_end) - block_start])
            if block_start <= start:
                break
            block_end = block_start
        return window_hash(b"".join(reversed(pieces)))
