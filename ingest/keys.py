"""API keys of trusted client apps: generated once, stored only as a hash.

A web process remembers an active key's app for KEY_CACHE_SECONDS (5), so a
busy app's posts cost no key query: a key revoked meanwhile keeps working in
each process until its entry is that old (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from django.conf import settings
from django.db import transaction

from ingest.models import Application

KEY_PREFIX = "sb"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A new key `sb_<lookup prefix>_<secret>` and its lookup prefix.

    The prefix finds the app with one indexed query; the secret (256 bits)
    makes a plain SHA-256 digest enough: there is nothing to brute-force.
    """
    prefix = secrets.token_hex(4)
    return f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def set_new_key(app: Application) -> str:
    """Give `app` a fresh key (not saved); returns the key, which is never stored."""
    key, app.key_prefix = new_key()
    app.key_hash = hash_key(key)
    return key


@transaction.atomic
def create_application(name: str) -> tuple[Application, str]:
    app = Application(name=name)
    key = set_new_key(app)
    app.save()
    return app, key


def application_for_key(key: str) -> Application | None:
    """The active app holding `key`, or None for unknown, malformed or revoked keys."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    app = Application.objects.filter(key_prefix=parts[1], revoked_at__isnull=True).first()
    if app is None or not secrets.compare_digest(app.key_hash, hash_key(key)):
        return None
    return app


_known: dict[str, tuple[float, Application]] = {}  # key -> (valid until, app); active keys only
KNOWN_KEYS = 10_000  # entries before the cache starts over


def cached_application_for_key(key: str) -> Application | None:
    """`application_for_key`, remembered for KEY_CACHE_SECONDS when the key is active."""
    now = time.monotonic()
    known = _known.get(key)
    if known is not None and known[0] > now:
        return known[1]
    app = application_for_key(key)
    if app is not None:
        if len(_known) >= KNOWN_KEYS:
            _known.clear()
        _known[key] = (now + settings.SWITCHBOARD["KEY_CACHE_SECONDS"], app)
    else:
        _known.pop(key, None)
    return app
