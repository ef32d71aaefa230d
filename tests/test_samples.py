"""The sample data kept in the repository is intact.

samples/ holds byte-identical copies of the project's reference sample data, so
that a clone works alone. samples/SHA256SUMS lists every file with its digest
(`cd samples && sha256sum -c SHA256SUMS` checks it by hand); the first test
holds the copies to it. When SWITCHBOARD_REFERENCE_DATA names the reference
folder (.ci/run sets it when the reference lies beside the checkout), the copies
are also compared with it byte for byte, and so is the manifest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
MANIFEST = SAMPLES / "SHA256SUMS"
FOLDERS = {"chat", "interactions", "xmpp"}


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below root (the manifest aside), by its relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path != MANIFEST
    }


def manifest() -> dict[str, str]:
    entries = {}
    for line in MANIFEST.read_text().splitlines():
        digest, name = line.split("  ", 1)
        entries[name] = digest
    return entries


def test_every_sample_file_matches_the_manifest():
    copies = files_under(SAMPLES)
    listed = manifest()

    assert {name.split("/")[0] for name in copies} == FOLDERS
    assert sorted(copies) == sorted(listed), "samples/ and samples/SHA256SUMS list different files"
    changed = [name for name, data in copies.items() if hashlib.sha256(data).hexdigest() != listed[name]]
    assert changed == [], f"sample files differ from their recorded digest: {changed}"


def test_the_samples_keep_the_bytes_that_line_handling_could_change():
    """What an end-of-line conversion on checkout would break (.gitattributes: -text)."""
    edge = (SAMPLES / "chat" / "edge.jsonl").read_bytes()
    assert edge.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in edge


REFERENCE = os.environ.get("SWITCHBOARD_REFERENCE_DATA")

if REFERENCE:  # only defined where a reference exists: a clone alone has none to compare with

    def test_the_samples_are_byte_identical_to_the_reference():
        reference = Path(REFERENCE)
        assert reference.is_dir(), f"SWITCHBOARD_REFERENCE_DATA={REFERENCE} is not a folder"
        originals = files_under(reference)
        copies = files_under(SAMPLES)

        assert sorted(copies) == sorted(originals)
        assert [name for name in originals if originals[name] != copies[name]] == []
        assert manifest() == {name: hashlib.sha256(data).hexdigest() for name, data in originals.items()}
