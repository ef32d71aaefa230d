"""Parsing an XMPP stanza into the queryable fields of `events.models.Stanza`.

Stanzas come from clients, so the parser is hardened: no DTD, no entity
expansion, no network, libxml2's default depth and size limits (no
`huge_tree`), and a size bound checked before parsing. A stanza declaring a
DOCTYPE or entities is refused outright: XMPP forbids them (RFC 6120 §11.1),
so they only ever appear in attacks (billion laughs, external entities).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from django.conf import settings
from lxml import etree

from events.registry import Invalid

CHAT_STATES_NS = "http://jabber.org/protocol/chatstates"
CHAT_STATES = frozenset({"active", "composing", "paused", "inactive", "gone"})
ELEMENTS = frozenset({"message", "presence", "iq"})
DEFAULT_MAX_STANZA_BYTES = 64 * 1024
# Limits of the Stanza model's columns.
MAX_TYPE = 64
MAX_JID = 1024

_DECLARATION = re.compile(r"<!\s*(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
_local = threading.local()  # lxml parsers must not be shared between threads


def max_stanza_bytes() -> int:
    return settings.SWITCHBOARD.get("MAX_STANZA_BYTES", DEFAULT_MAX_STANZA_BYTES)


def _parser() -> etree.XMLParser:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
    return parser


def parse_root(stanza: str) -> etree._Element:
    """The stanza's root element; `Invalid` if it is oversize, declares a DTD or is not well-formed."""
    limit = max_stanza_bytes()
    if len(stanza) > limit or len(data := stanza.encode("utf-8", errors="surrogatepass")) > limit:
        raise Invalid(f"'stanza' is over the limit of {limit} bytes")
    if "<!" in stanza and _DECLARATION.search(stanza):
        raise Invalid("'stanza' declares a DOCTYPE or entities, which XMPP forbids")
    try:
        return etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as error:
        raise Invalid(f"'stanza' is not well-formed XML: {error.msg or error}"[:400]) from None
    except ValueError as error:  # e.g. surrogates lxml cannot take
        raise Invalid(f"'stanza' is not usable XML: {error}") from None


def _local_name(element: etree._Element) -> str:
    return etree.QName(element).localname


def _attribute(root: etree._Element, name: str, limit: int) -> str:
    value = root.get(name, "")
    if len(value) > limit:
        raise Invalid(f"stanza '{name}' attribute is longer than {limit} characters")
    return value


def stanza_fields(stanza: str) -> dict[str, Any]:
    """The Stanza model's fields for one stanza's XML text."""
    root = parse_root(stanza)
    element = _local_name(root)
    if element not in ELEMENTS:
        raise Invalid(f"stanza root must be <message>, <presence> or <iq>, got <{element[:40]}>")
    body = ""
    chat_state = ""
    for child in root:
        if not isinstance(child.tag, str):  # a comment or PI that survived
            continue
        name = etree.QName(child)
        if name.localname == "body" and not body:
            body = "".join(child.itertext())
        elif name.namespace == CHAT_STATES_NS and name.localname in CHAT_STATES and not chat_state:
            chat_state = name.localname
    stanza_type = _attribute(root, "type", MAX_TYPE)
    return {
        "element": element,
        "type": stanza_type,
        "from_jid": _attribute(root, "from", MAX_JID),
        "to_jid": _attribute(root, "to", MAX_JID),
        "body": body,
        "chat_state": chat_state,
        "unavailable": element == "presence" and stanza_type == "unavailable",
    }
