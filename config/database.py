"""DATABASES["default"] from DATABASE_URL: PostgreSQL with several hosts (failover), and the
connection settings that turn a database outage into a quick error (a 503 for clients)
instead of a hang.

A URL may list hosts as libpq's own URIs do, tried in order:

    postgres://user:password@db1:5432,db2:5432/switchboard?target_session_attrs=read-write

With `target_session_attrs=read-write` libpq skips a server that is in recovery (a standby),
so that once a standby is promoted, new connections find it. Any libpq parameter may be given
in the query string; those of POSTGRES_DEFAULTS are set unless it does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import dj_database_url

POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql")
DEFAULT_PORT = "5432"

# libpq: fail fast on a server that is down or unreachable.
POSTGRES_DEFAULTS: dict[str, int] = {
    # Seconds per host tried (libpq's minimum is 2); without it, connecting to an unreachable
    # host waits for the kernel's SYN retries, about two minutes.
    "connect_timeout": 3,
    # A connection whose server vanished (machine lost, network cut) is noticed within
    # ~11 s while idle or waiting for a reply (5 s idle, then 3 probes 2 s apart),
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    # and within 5 s (milliseconds here) when what it sent goes unacknowledged.
    "tcp_user_timeout": 5000,
}


def split_hosts(netloc: str) -> tuple[str, list[tuple[str, str]]]:
    """`user:pw@h1:p1,h2,[::1]:p3` -> ("user:pw", [("h1", "p1"), ("h2", "5432"), ("::1", "p3")])."""
    userinfo, _, hostlist = netloc.rpartition("@")
    hosts = []
    for item in hostlist.split(","):
        if item.startswith("["):  # IPv6: [addr] or [addr]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host:
            raise ValueError(f"DATABASE_URL lists an empty host in {hostlist!r}")
        if port and not port.isdigit():
            raise ValueError(f"DATABASE_URL: the port of {item!r} is not a number")
        hosts.append((host, port or DEFAULT_PORT))
    return userinfo, hosts


def database_from_url(url: str, *, conn_max_age: int, health_checks: bool, statement_timeout: int) -> dict[str, Any]:
    """The Django settings of one database; `statement_timeout` (seconds, 0: none) is PostgreSQL's."""
    parts = urlsplit(url)
    hosts: list[tuple[str, str]] = []
    if parts.scheme in POSTGRES_SCHEMES and "," in parts.netloc:
        # dj-database-url reads one host: give it the first, then put the whole list back.
        userinfo, hosts = split_hosts(parts.netloc)
        url = parts._replace(netloc=f"{userinfo}@localhost" if userinfo else "localhost").geturl()
    config = dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=health_checks)
    if config["ENGINE"] != "django.db.backends.postgresql":
        return config
    if hosts:
        # libpq takes comma-separated lists (Django passes HOST and PORT through as they are).
        config["HOST"] = ",".join(host for host, _ in hosts)
        config["PORT"] = ",".join(port for _, port in hosts)
    options = {**POSTGRES_DEFAULTS, **config.get("OPTIONS", {})}
    if statement_timeout > 0:
        options["options"] = f"{options.get('options', '')} -c statement_timeout={statement_timeout * 1000}".strip()
    config["OPTIONS"] = options
    return config
