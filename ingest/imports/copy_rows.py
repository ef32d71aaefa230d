"""The COPY text of a chunk's rows (PostgreSQL), built column by column.

A row is `registry.ROW`, tab separated, newline ended, in the order of the loader's
COLUMNS: each text escaped as `events.db.copy_text` escapes it, a NULL as `\\N`, a number
as JSON writes it (the shortest text that reads back as the same float, as repr's: only
the spelling of exponents differs, `1e+16` against repr's `1e16`). A bulk import builds
25,000 rows at a time with a few C passes per column and one join per row, where Python
code per field would cost several times the rest of validation: the texts are taken
from UTF-8 bytes (the record's own, never decoded), the columns that take few values
(family to session; online and client timestamp) are one cached piece per row, and the
numbers are written by orjson in one call per column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import orjson

from events.db import copy_text

NULL = b"\\N"
ONLINE_TEXT = {None: NULL, True: b"t", False: b"f"}
ONLINE_NO_CLIENT_TIME = {online: text + b"\t" + NULL for online, text in ONLINE_TEXT.items()}
# What copy_text escapes, and how, in bytes. No payload holds a NUL byte (JSON allows none) nor
# does a text column (identifiers hold no control character): NUL separates them when joined.
_ESCAPES = tuple((char.encode(), copy_text(char).encode()) for char in ("\\", "\t", "\n", "\r"))


def row_texts(columns: Sequence[Sequence]) -> tuple[list[bytes], list[bytes]]:
    """The COPY text of each row given by column (`registry.ROW`), and of its row of the id
    registry (`uid\tts`, events/identity.py), each without its newline (`joined` adds them)."""
    uids, families, kinds, categories, sites, sessions, actors, ts, online, client_ts, payloads, lines = columns
    uids = _texts(uids)
    ts = _numbers(ts)
    if client_ts.count(None) == len(client_ts):
        online_client: Iterable[bytes] = map(ONLINE_NO_CLIENT_TIME.__getitem__, online)
    else:
        online_client = map(b"\t".join, zip(map(ONLINE_TEXT.__getitem__, online), map(_number, client_ts), strict=True))
    rows = list(
        map(
            b"\t".join,
            zip(
                uids,
                _piece(families, kinds, categories),
                _piece(sites, sessions),
                _texts(actors),
                ts,
                online_client,
                _payloads(payloads),
                _numbers(lines),
                strict=True,
            ),
        )
    )
    return rows, list(map(b"\t".join, zip(uids, ts, strict=True)))


def joined(rows: Sequence[bytes]) -> bytes:
    """The rows, each ended by a newline."""
    return b"\n".join([*rows, b""]) if rows else b""


def row_at(text: bytes, uid: str, start: int = 0) -> tuple[int, int]:
    """Where the row of `uid` is (its start, and its end after the newline) in the COPY text of
    rows in uid order (code-point order), each starting with its uid (an event's row or its
    registry's), at `start` or after: found by halving the text, a few dozen look-ups, where
    an array of every row's end costs its builder a pass over the rows (and the hand-over its
    bytes), for the few rows ever looked for."""
    low, high = start, len(text)
    while low < high:
        at = text.rfind(b"\n", low, (low + high) // 2) + 1 or low  # the row around the middle
        tab = text.index(b"\t", at)
        found = unescaped(text[at:tab].decode())
        if found == uid:
            return at, text.index(b"\n", tab) + 1
        if found < uid:
            low = text.index(b"\n", tab) + 1
        else:
            high = at
    raise KeyError(uid)


_ESCAPED = re.compile(r"\\(.)")
_UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def unescaped(text: str) -> str:
    """A field of COPY text as it was before `copy_text` escaped it."""
    return _ESCAPED.sub(lambda m: _UNESCAPE[m.group(1)], text) if "\\" in text else text


def _texts(texts: Sequence[str]) -> list[bytes]:
    """Each text as copy_text writes it, in UTF-8: one join, encode and split."""
    joined = "\0".join(texts)
    if not any(char in joined for char in "\\\t\n\r"):
        split = joined.encode().split(b"\0")
        if len(split) == len(texts):
            return split
    return [copy_text(text).encode() for text in texts]  # some text to escape (or a NUL): one by one


def _piece(*columns: Sequence[str]) -> Iterable[bytes]:
    """Adjacent text columns of few values, as one piece per row, looked up (not built) by
    the value of the one column that varies (chat: the kind, then the site)."""
    if not columns[0]:
        return []
    varying = [i for i, column in enumerate(columns) if column.count(column[0]) != len(column)]
    if len(varying) > 1:  # looked up by every value at once: a tuple per row, slower
        keys = set(zip(*columns, strict=True))
        pieces = {key: b"\t".join(copy_text(text).encode() for text in key) for key in keys}
        return map(pieces.__getitem__, zip(*columns, strict=True))
    at = varying[0] if varying else 0
    before = [copy_text(column[0]).encode() for column in columns[:at]]
    after = [copy_text(column[0]).encode() for column in columns[at + 1 :]]
    pieces = {value: b"\t".join((*before, copy_text(value).encode(), *after)) for value in set(columns[at])}
    return map(pieces.__getitem__, columns[at])


def _numbers(values: Sequence[float | int]) -> list[bytes]:
    """Numbers as JSON writes them (orjson: a float's shortest round-trip text)."""
    try:
        return orjson.dumps(values)[1:-1].split(b",") if values else []
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return [repr(value).encode() for value in values]


def _number(value: float | None) -> bytes:
    return NULL if value is None else _numbers((value,))[0]


def _payloads(payloads: Sequence[bytes]) -> Sequence[bytes]:
    """The records as received (without their line's padding), escaped as copy_text escapes."""
    payloads = list(map(bytes.strip, payloads))
    joined = b"\0".join(payloads)
    if not any(char in joined for char, _ in _ESCAPES):  # nothing to escape: the records themselves
        return payloads
    for char, escape in _ESCAPES:
        joined = joined.replace(char, escape)
    texts = joined.split(b"\0")
    if len(texts) != len(payloads):  # a NUL byte after all: one by one
        return [copy_text(payload.decode()).encode() for payload in payloads]
    return texts
