"""Which sites a client app may write to (an optional allow-list per app).

The identity model (docs/operations.md, "Who may write what"): an app key
authenticates one trusted client app; an app with an allow-list can store
events only for those sites; event ids are global, so the first valid event
with an id claims it, whichever app sent it.
"""

from __future__ import annotations

from ingest.models import Application
from ingest.records import Chunk


def reject_sites_not_allowed(chunk: Chunk, app: Application | None) -> Chunk:
    """Move the events of sites outside `app`'s allow-list to the chunk's rejections.

    Run after validation and before storing: a rejected record claims no id.
    """
    allowed = app.site_allow_list() if app is not None else None
    if allowed is None:
        return chunk
    kept = []
    for line, event in chunk.events:
        if event.site in allowed:
            kept.append((line, event))
        else:
            reason = f"site {event.site!r} is not among the sites app {app.name!r} may write to"
            chunk.reject(line, reason, event.payload_json or b"")
    chunk.events = kept
    return chunk
