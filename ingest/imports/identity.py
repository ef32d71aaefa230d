"""Recognising a file again, so that a rerun resumes its import instead of starting over."""

from __future__ import annotations

import hashlib

FINGERPRINT_BYTES = 1 << 20


class ConcurrentImport(RuntimeError):
    """Another process is importing the same file."""


def fingerprint(path: str) -> str:
    """A file's identity for resuming: the hash of its first MiB (as stored on disk)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(FINGERPRINT_BYTES)).hexdigest()
