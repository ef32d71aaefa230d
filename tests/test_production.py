"""Production mode (issue 12 item 9): explicit from the environment, refuses to start without
its secrets and services, passes `check --deploy --fail-level WARNING` with the documented
environment, and works behind the documented TLS proxy. Settings are read at start, so each
case runs manage.py in a child process with exactly the environment it names."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = REPO / "contrib" / "deploy" / "switchboard.env.example"
HOST = "switchboard.example.com"


def documented_environment() -> dict[str, str]:
    """contrib/deploy/switchboard.env.example as an operator fills it in (a generated SECRET_KEY)."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
    return env


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def test_check_deploy_is_clean_with_the_documented_environment():
    env = {**documented_environment(), "SECRET_KEY": secrets.token_urlsafe(50)}

    done = run_manage(env, "check", "--deploy", "--fail-level", "WARNING")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_the_example_refuses_to_start_until_its_secret_is_replaced():
    done = run_manage(documented_environment(), "check")

    assert done.returncode != 0
    assert "SWITCHBOARD_MODE=production, but the environment is incomplete" in done.stderr
    assert "SECRET_KEY is too short or a placeholder" in done.stderr


def test_production_without_its_services_names_each_missing_one():
    done = run_manage({"SWITCHBOARD_MODE": "production", "DEBUG": "true"}, "check")

    assert done.returncode != 0
    for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        assert f"  - {name} is not set" in done.stderr, name
    assert "DEBUG is on" in done.stderr


def test_an_unknown_mode_is_an_error():
    done = run_manage({"SWITCHBOARD_MODE": "prod"}, "check")
    assert done.returncode != 0 and "SWITCHBOARD_MODE must be 'embedded'" in done.stderr


def test_without_any_configuration_it_still_starts_embedded():
    done = run_manage({}, "check")
    assert done.returncode == 0, done.stderr


PROXY_PROBE = """
host = "HOST_NAME"
import json
from django.test import Client
from django.conf import settings
proxied = {"HTTP_HOST": host, "HTTP_X_FORWARDED_PROTO": "https"}
client = Client(enforce_csrf_checks=True)
page = client.get("/admin/login/", **proxied)
login = client.post(
    "/admin/login/",
    {"username": "nobody", "password": "wrong", "csrfmiddlewaretoken": page.cookies["csrftoken"].value},
    HTTP_ORIGIN="https://" + host, HTTP_REFERER="https://" + host + "/admin/login/", **proxied,
)
plain = Client().get("/api/sites/summary/", HTTP_HOST=host)
health = Client().get("/api/health/", HTTP_HOST=host)
print(json.dumps({
    "login": login.status_code, "login_form_again": b"Please enter the correct" in login.content,
    "csrf_cookie_secure": bool(page.cookies["csrftoken"]["secure"]),
    "plain": plain.status_code, "plain_to": plain.get("Location"), "health": health.status_code,
    "hsts": client.get("/api/docs/", **proxied).get("Strict-Transport-Security"),
}))
""".replace("HOST_NAME", HOST)


@pytest.mark.django_db(transaction=True)
def test_the_admin_behind_the_tls_proxy_passes_csrf_and_plain_http_is_redirected(database_url):
    env = {**documented_environment(), "SECRET_KEY": secrets.token_urlsafe(50), "DATABASE_URL": database_url}

    done = run_manage(env, "shell", "-c", PROXY_PROBE)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Main failed this login with 403 (CSRF: origin not trusted, request not seen as https).
    assert (result["login"], result["login_form_again"]) == (200, True)
    assert result["csrf_cookie_secure"] is True
    assert (result["plain"], result["plain_to"]) == (301, f"https://{HOST}/api/sites/summary/")
    assert result["health"] in (200, 503)  # probes over plain HTTP are not redirected
    assert result["hsts"] == "max-age=31536000; includeSubDomains"


HOST_PROBE = """
from django.conf import settings
from django.test import RequestFactory
for host in ("a.example.com", "b.example.com", "c.example.com"):
    try:
        print(host, RequestFactory().get("/", HTTP_HOST=host).get_host() == host)
    except Exception as error:
        print(host, type(error).__name__)
print(" ".join(getattr(settings, "CSRF_TRUSTED_ORIGINS", [])))
"""


def test_allowed_hosts_entries_are_read_without_the_blanks_around_them():
    embedded = run_manage({"ALLOWED_HOSTS": " a.example.com , b.example.com ,"}, "shell", "-v", "0", "-c", HOST_PROBE)
    env = {
        **documented_environment(),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "a.example.com, b.example.com",
    }
    production = run_manage(env, "shell", "-v", "0", "-c", HOST_PROBE)

    assert embedded.returncode == 0 and production.returncode == 0, embedded.stderr + production.stderr
    # Main refused b.example.com: its entry was " b.example.com".
    for done in (embedded, production):
        assert done.stdout.splitlines()[:3] == [
            "a.example.com True", "b.example.com True", "c.example.com DisallowedHost",
        ]  # fmt: skip
    assert production.stdout.splitlines()[3] == "https://a.example.com https://b.example.com"


@pytest.mark.parametrize("hosts", ["*", " * ", "switchboard.example.com,*", " , "])
def test_production_refuses_allowed_hosts_that_accept_any_host_or_none(hosts):
    env = {**documented_environment(), "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": hosts}

    done = run_manage(env, "check")

    assert done.returncode != 0
    assert "SWITCHBOARD_MODE=production, but the environment is incomplete" in done.stderr
    assert "  - ALLOWED_HOSTS" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "entry", ["switchboard.example.com:8443", "https://switchboard.example.com", "switchboard.example.com/", "::1"]
)
def test_production_refuses_allowed_hosts_entries_that_match_no_host(entry):
    """Issue 22 item 15, second look: Django compares a request's host without its port with each
    entry, so an entry with a port, a scheme or a path (or an IPv6 address without brackets) never
    matches: every request was a 400, the health check's too, with nothing saying why."""
    env = {
        **documented_environment(),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": f"a.example.com,{entry}",
    }

    done = run_manage(env, "check")

    assert done.returncode != 0
    assert f"  - ALLOWED_HOSTS entry {entry!r} matches no host" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "hosts", ["switchboard.example.com", ".example.org, [::1], 192.0.2.1, Switchboard.Example.COM"]
)
def test_production_takes_host_names_domains_and_addresses(hosts):
    env = {**documented_environment(), "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": hosts}

    done = run_manage(env, "check", "--deploy", "--fail-level", "CRITICAL")

    assert done.returncode == 0, done.stderr
