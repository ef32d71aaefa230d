"""Exit 0 when Switchboard's health endpoint answers 200, else 1 with the reason on stderr:
compose's web health check, and usable by any local probe.

    python contrib/deploy/healthcheck.py [URL]     (default http://127.0.0.1:8000/api/health/)

The request names a host that ALLOWED_HOSTS accepts (read from the same environment as
the server's), so the check passes whatever domain the deployment serves: Django answers
400 to a Host header outside the list, and a probe of 127.0.0.1 would otherwise send
"127.0.0.1". Host validation itself stays as it is for every request.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/api/health/"
# config/settings.py's default when ALLOWED_HOSTS is not set.
DEFAULT_ALLOWED_HOSTS = "localhost,127.0.0.1,[::1],testserver"


def probe_host(allowed_hosts: str) -> str:
    """A Host header that Django accepts with this ALLOWED_HOSTS (comma-separated, blanks
    around entries ignored, as config/settings.py reads it)."""
    for entry in (entry.strip() for entry in allowed_hosts.split(",")):
        if entry and entry != "*":
            return entry.lstrip(".")  # ".example.com" allows example.com itself
    return "localhost"  # "*" allows any host


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    host = probe_host(os.environ.get("ALLOWED_HOSTS") or DEFAULT_ALLOWED_HOSTS)
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:  # HTTPError (400, 503...) included
        print(f"unhealthy: GET {url} with Host: {host}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
