"""Records of event files, as raw bytes: NDJSON or one JSON array, gzip or not.

Records are passed on exactly as written (no parse and re-serialize), so the
server stores the text the file holds, and a line that is not valid JSON is
sent as well and rejected there with its reason, without failing the others.
Memory stays bounded: files are read in blocks.
"""

from __future__ import annotations

import codecs
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BOM = b"\xef\xbb\xbf"
BLOCK = 1 << 20
# Longer records are not sent (no server takes a body this big by default) but
# listed in `EventFile.too_long`; a JSON array element this long breaks the file.
MAX_RECORD_BYTES = 10 * 1024 * 1024
NDJSON = "ndjson"
ARRAY = "array"


class BrokenFile(ValueError):
    """The file cannot be cut into records (a JSON array that does not parse)."""


@dataclass
class EventFile:
    """An open event file; `records()` yields (number, raw record): the line number in
    an NDJSON file, the position (from 1) in a JSON array."""

    path: Path
    raw: BinaryIO = field(init=False)
    stream: BinaryIO = field(init=False)
    framing: str = field(init=False)
    too_long: list[int] = field(default_factory=list)  # record numbers skipped as too long

    def __post_init__(self) -> None:
        self.raw = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        compressed = self.raw.read(2) == b"\x1f\x8b"
        self.raw.seek(0)
        self.stream = gzip.GzipFile(fileobj=self.raw, mode="rb") if compressed else self.raw  # type: ignore[assignment]
        head = self.stream.peek(64 * 1024) if hasattr(self.stream, "peek") else b""
        self.framing = ARRAY if head.removeprefix(BOM).lstrip().startswith(b"[") else NDJSON

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def position(self) -> int:
        """Bytes of the file read so far (compressed bytes for gzip): for progress."""
        return self.raw.tell()

    def close(self) -> None:
        self.stream.close()
        self.raw.close()

    def records(self) -> Iterator[tuple[int, bytes]]:
        return self._array() if self.framing == ARRAY else self._lines()

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        number = 0
        while line := self.stream.readline(MAX_RECORD_BYTES + 1):
            number += 1
            if number == 1:
                line = line.removeprefix(BOM)
            if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                self.too_long.append(number)
                while (rest := self.stream.readline(BLOCK)) and not rest.endswith(b"\n"):
                    pass
                continue
            line = line.rstrip(b"\r\n")
            if line.strip():  # blank lines carry no record
                yield number, line

    def _array(self) -> Iterator[tuple[int, bytes]]:
        """Each element's own text, found by the standard decoder in a sliding window."""
        decoder = json.JSONDecoder()
        text_of = codecs.getincrementaldecoder("utf-8-sig")()
        text, pos, eof = "", 0, False

        def more() -> None:
            nonlocal text, pos, eof
            block = self.stream.read(BLOCK)
            eof = not block
            text = text[pos:] + text_of.decode(block, final=eof)
            pos = 0

        def skip_space() -> str:
            nonlocal pos
            while True:
                while pos < len(text) and text[pos] in " \t\r\n":
                    pos += 1
                if pos < len(text) or eof:
                    return text[pos : pos + 1]
                more()

        try:
            more()
            if skip_space() != "[":
                raise BrokenFile("not a JSON array")
            pos += 1
            position = 0
            if skip_space() == "]":
                return
            while True:
                try:
                    _, end = decoder.raw_decode(text, pos)
                    complete = end < len(text) or eof  # a number cut by the window parses too
                except json.JSONDecodeError as error:
                    if eof:
                        raise BrokenFile(f"element {position + 1}: {error}") from None
                    complete = False
                if not complete:
                    if len(text) - pos > MAX_RECORD_BYTES:
                        raise BrokenFile(f"element {position + 1} is not valid JSON within {MAX_RECORD_BYTES} bytes")
                    more()
                    continue
                position += 1
                yield position, text[pos:end].encode()
                pos = end
                separator = skip_space()
                pos += 1
                if separator == "]":
                    break
                if separator != ",":
                    raise BrokenFile(f"after element {position}: expected ',' or ']', found {separator!r}")
                skip_space()
            if skip_space():
                raise BrokenFile("text after the end of the array")
        except UnicodeDecodeError as error:
            raise BrokenFile(f"not UTF-8: {error}") from None
