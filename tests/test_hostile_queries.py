"""Hostile query values (issue 22 item 11): every filter of every read endpoint (events, summaries,
rooms, exports, batches) and of every admin changelist, object page and the dashboard, given NUL,
huge, negative, NaN and infinite numbers, far dates, overlong strings and invalid UTF-8 or
surrogates (percent-encoded), answers 4xx or an (empty) answer: never a 5xx. A walk of every
parameter with each hostile value, then Hypothesis combining them; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import time
from urllib.parse import quote_from_bytes

import orjson
import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from lxml import html
from rest_framework.test import APIClient

from ingest.models import RawBatch

# Each value as the bytes a client puts in the URL, percent-encoded: invalid UTF-8 and lone
# surrogates (CESU-style bytes) included.
HOSTILE = [
    b"\x00", b"1e300", b"nan", b"-inf", b"9999-12-31", b"10000-01-01", b"2021-02-30", b"-1",
    b"99999999999999999999999999999", b"x" * 5000, b"\xed\xa0\x80", b"\xff\xfe",
]  # fmt: skip
MORE = [b"a\x00b", b"-1e300", b"9999-12-31T23:59:59+00:00", b"0001-01-01", b"\n", b"%", b"[]",
        b"%00", b"1e-400", b"NaN", b"inf", b"Infinity", b"0000-00-00", b"0", b"-99999999999999999999", b"1" * 400,
        b"\xc0\xaf", b"\x80", b" ", b"'; --", b"\xe2\x80\xa8", b"zz\nvictim,messages=1", b"{}", b"true", b"csv",
        b"txt", b"json"]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(HOSTILE + MORE),
    st.binary(max_size=12),
    st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.floats().map(lambda f: repr(f).encode()),
    st.integers().map(lambda i: str(i).encode()),
    st.datetimes().map(lambda d: d.isoformat().encode()),
)
EXAMPLES = hypothesis_settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
EVENT_PARAMETERS = ["site", "session", "family", "type", "category", "name", "actor", "since", "until", "cursor",
                    "page_size", "format"]  # fmt: skip
API = [  # (path, where a path value goes, parameters)
    ("/api/events/", None, EVENT_PARAMETERS),
    ("/api/sites/summary/", None, ["format"]),
    ("/api/sites/{}/summary/", "site_id", ["format"]),
    ("/api/rooms/summary/", None, ["format"]),
    ("/api/batches/{}/", "batch_id", []),
    ("/api/health/", None, ["format"]),
]
DASHBOARD_PARAMETERS = ["site", "since", "until", "bucket", "by", "top", "rbucket"]
# The admin's own parameters on every changelist (search, order, page, show all, error flag, popups).
CHANGELIST_PARAMETERS = {"q", "o", "p", "all", "e", "_to_field", "_popup", "_changelist_filters"}
NOW = time.time() - 3600


def url(path: str, path_value: bytes | None, query: list[tuple[str, bytes]]) -> str:
    if path_value is not None:
        path = path.format(quote_from_bytes(path_value, safe=""))
    return path + "?" + "&".join(f"{name}={quote_from_bytes(value, safe='')}" for name, value in query)


def assert_no_server_error(client, target: str) -> None:
    cache.clear()  # throttle counts
    response = client.get(target)
    if hasattr(response, "streaming_content"):
        b"".join(response.streaming_content)  # a CSV fails while it streams, if at all
    assert response.status_code < 500, (target, response.content[:300])


@pytest.fixture
def data(db, tmp_path):
    """A little of everything: events of each family, rejections, batches, an import, summaries."""
    lines = [
        {"id": "m1", "type": "message", "from": "v", "site_id": "s1", "data": {"message": "hi"}, "timestamp": NOW},
        {"id": "s1", "type": "status", "from": "o", "site_id": "s1", "data": {"status": "online"}, "timestamp": NOW},
        {"id": "x1", "timestamp": NOW, "room_id": "r1", "channel": "c", "event": "muc-broadcast-message",
         "nick": "n", "stanza": "<message type='groupchat'><body>hi</body></message>"},
        {"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction", "name": "pageview",
         "data": {"host": "h", "path": "/"}, "timestamp": "2021-01-01 09:15:27.243860"},
        {"id": "bad", "type": "message"},
    ]  # fmt: skip
    path = tmp_path / "few.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines) + b"not json\n")
    call_command("import_jsonl", str(path), stderr=io.StringIO())


@pytest.fixture
def unthrottled():
    rates = {scope: "1000000/min" for scope in ("app", "analyst", "anon")}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        yield


def walk(client, path: str, path_value: str | None, parameters: list[str]) -> int:
    """Every parameter with every hostile value, one at a time; then every value in the path."""
    requests = 0
    for name in parameters:
        for value in HOSTILE:
            assert_no_server_error(client, url(path, b"1" if path_value else None, [(name, value)]))
            requests += 1
    if path_value:
        for value in HOSTILE:
            assert_no_server_error(client, url(path, value, []))
            requests += 1
    return requests


def combined(parameters: list[str], with_path: bool):
    query = st.lists(st.tuples(st.sampled_from(parameters), VALUES), max_size=4) if parameters else st.just([])
    return st.tuples(VALUES if with_path else st.none(), query)


@pytest.mark.parametrize(("path", "path_value", "parameters"), API, ids=[a[0] for a in API])
def test_read_api_filters_never_answer_a_server_error(data, analyst_token, unthrottled, path, path_value, parameters):
    client = APIClient(HTTP_AUTHORIZATION=f"Token {analyst_token}")
    assert walk(client, path, path_value, parameters) >= len(HOSTILE)

    @EXAMPLES
    @given(case=combined(parameters or ["format"], bool(path_value)))
    def combinations(case: tuple[bytes | None, list[tuple[str, bytes]]]) -> None:
        assert_no_server_error(client, url(path, case[0], case[1]))

    combinations()


def admin_targets() -> list[str]:
    return [f"{m._meta.app_label}_{m._meta.model_name}" for m in admin.site._registry]


def parameters_of(page: bytes) -> set[str]:
    """The query parameters a changelist's own links and forms use: its filters."""
    tree = html.fromstring(page)
    names = set()
    for href in tree.xpath("//a/@href"):
        if href.startswith("?"):
            names |= {part.split("=", 1)[0] for part in href[1:].split("&") if part}
    names |= set(tree.xpath("//form[not(@method='post')]//*[self::input or self::select]/@name"))
    return names


@pytest.mark.parametrize("model", admin_targets())
def test_admin_changelists_and_object_pages_never_answer_a_server_error(admin_client, data, model):
    changelist = reverse(f"admin:{model}_changelist")
    page = admin_client.get(changelist)
    assert page.status_code == 200
    parameters = sorted(parameters_of(page.content) | CHANGELIST_PARAMETERS)
    assert walk(admin_client, changelist, None, parameters) >= len(HOSTILE)
    object_page = reverse(f"admin:{model}_change", args=["0"]).replace("/0/", "/{}/")
    walk(admin_client, object_page, "object_id", [])
    walk(admin_client, object_page.replace("/change/", "/history/"), "object_id", [])

    @EXAMPLES
    @given(case=combined(parameters, False))
    def combinations(case: tuple[None, list[tuple[str, bytes]]]) -> None:
        assert_no_server_error(admin_client, url(changelist, None, case[1]))

    combinations()


def test_the_dashboard_never_answers_a_server_error(admin_client, data):
    dashboard = reverse("switchboard-dashboard")
    assert walk(admin_client, dashboard, None, DASHBOARD_PARAMETERS) == len(DASHBOARD_PARAMETERS) * len(HOSTILE)

    @EXAMPLES
    @given(case=combined(DASHBOARD_PARAMETERS, False))
    def combinations(case: tuple[None, list[tuple[str, bytes]]]) -> None:
        assert_no_server_error(admin_client, url(dashboard, None, case[1]))

    combinations()


def test_the_reported_cases_answer_400_or_an_explanation(admin_client, data, analyst_token):
    """The issue's own examples, with the answer each gets."""
    analyst = APIClient(HTTP_AUTHORIZATION=f"Token {analyst_token}")
    nul = analyst.get("/api/sites/%00/summary/")
    assert nul.status_code == 400 and "NUL" in nul.json()["detail"]
    assert admin_client.get("/admin/events/event/?site=%00").status_code == 400
    assert admin_client.get("/admin/dashboard/?site=%00").status_code == 400
    for value in ("1e300", "nan", "inf", "-inf"):
        page = admin_client.get("/admin/dashboard/", {"since": value})
        assert page.status_code == 200 and b"out of range" in page.content, value
    page = admin_client.get("/admin/dashboard/", {"until": "9999-12-31"})
    assert page.status_code == 200 and b"out of range" in page.content
    assert RawBatch.objects.exists()  # the data was there to be read


@pytest.mark.parametrize("header", ["HTTP_AUTHORIZATION", "HTTP_COOKIE", "HTTP_X_ANYTHING"])
def test_a_nul_in_a_header_is_refused_not_looked_up(db, analyst_token, header):
    """gunicorn refuses such a header; a server that passes it on must not turn it into a 500
    (a token looked up with a NUL failed on PostgreSQL)."""
    client = APIClient(HTTP_AUTHORIZATION=f"Token {analyst_token}")
    headers = {header: "Token a\x00b" if header == "HTTP_AUTHORIZATION" else "sessionid=a\x00b"}

    response = client.get("/api/sites/summary/", **headers)

    assert response.status_code == 400 and "NUL" in response.json()["detail"]
    assert client.get("/api/sites/summary/").status_code == 200


@pytest.mark.parametrize("path", ["/api/sites/summary/", "/api/events/"])
def test_a_token_that_is_not_utf8_is_a_401_not_a_500(db, analyst_token, path):
    """Issue 22 item 11, second look: a header arrives as Latin-1 text; knox decodes the token
    as UTF-8 and raised UnicodeDecodeError (500) for `Token é…`, on every endpoint, GET and POST."""
    client = APIClient(HTTP_AUTHORIZATION="Token " + "\u00e9" * 10)

    for response in (client.get(path), client.post(path, b"{}", content_type="application/json")):
        assert response.status_code == 401, response.content
        assert response.json()["detail"] == "Invalid token."
    client.credentials(HTTP_AUTHORIZATION=f"Token {analyst_token}")
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"actor":' * 50_000], ids=["arrays", "objects"])
def test_json_nested_past_the_recursion_limit_is_a_400(db, body):
    """Issue 22 item 13, second look: DRF's JSON parser (the erasure endpoint's body) raised
    RecursionError on deep nesting, a 500; the events endpoint reads its body raw and bounds nesting."""
    user = User.objects.create_user("dpo", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="forget_actor"))
    client = APIClient()
    client.force_authenticate(user)

    response = client.post("/api/actors/forget/", body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert "nested too deeply" in response.json()["detail"]
    assert client.post("/api/actors/forget/", {"actor": "a"}, format="json").status_code == 200


@pytest.mark.parametrize("path", ["fast path", "django"])
def test_a_nul_in_the_content_type_is_refused_on_both_write_paths(transactional_db, path):
    """Issue 22 item 11, second look: Content-Type is no HTTP_ header in WSGI, so the NUL check
    missed it, and the fast path (in front of Django) checks none: the batch's content type was
    stored with its NUL, which PostgreSQL refuses (a 500)."""
    from django.core.handlers.wsgi import WSGIHandler

    from config.wsgi import application
    from ingest.keys import create_application
    from tests.test_outbox import wsgi_post

    _, key = create_application("nul")
    body = orjson.dumps({"id": "a", "type": "message", "from": "v", "site_id": "s", "data": {"message": "m"},
                         "timestamp": NOW})  # fmt: skip
    served_by = application if path == "fast path" else WSGIHandler()

    status, _, data = wsgi_post(body, f"Api-Key {key}", extra={"CONTENT_TYPE": "application/json\x00"},
                                application=served_by)  # fmt: skip

    assert status.startswith("400"), data
    assert "NUL" in orjson.loads(data)["detail"]
    assert not RawBatch.objects.exists()
    assert wsgi_post(body, f"Api-Key {key}", application=served_by)[0].startswith("202")
