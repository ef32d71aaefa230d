"""The OpenAPI schema (drf-spectacular) is valid, warning-free and describes the
API; the docs page loads Swagger UI from the sidecar package, not a CDN."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

ANALYST_PATHS = ["/api/sites/summary/", "/api/sites/{site_id}/summary/", "/api/rooms/summary/"]
EVENT_FILTERS = {"site", "session", "family", "type", "category", "name", "actor", "since", "until"}


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_validates_without_warnings(tmp_path):
    path = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))  # raises on any warning

    assert yaml.safe_load(path.read_text())["openapi"].startswith("3.")


def test_summaries_are_described_in_json_text_and_csv(schema):
    for path in ANALYST_PATHS:
        get = schema["paths"][path]["get"]
        assert set(get["responses"]["200"]["content"]) == {"application/json", "text/plain", "text/csv"}, path
        assert {"401", "403"} <= set(get["responses"]), path
        fmt = next(p for p in get["parameters"] if p["name"] == "format")
        assert fmt["schema"]["enum"] == ["csv", "json", "txt"]
    site_id = next(
        p for p in schema["paths"]["/api/sites/{site_id}/summary/"]["get"]["parameters"] if p["in"] == "path"
    )
    assert site_id["name"] == "site_id" and site_id["schema"]["type"] == "string"
    sites = schema["components"]["schemas"]["SiteSummary"]["properties"]
    assert set(sites) == {"refreshed_at", "stale_sites", "sites"}


def test_event_list_is_described_with_its_filters_and_cursor(schema):
    get = schema["paths"]["/api/events/"]["get"]
    parameters = {p["name"]: p for p in get["parameters"]}

    assert set(parameters) == EVENT_FILTERS | {"cursor", "page_size", "format"}
    assert parameters["format"]["schema"]["enum"] == ["csv", "json"]
    assert set(get["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert parameters["family"]["schema"]["enum"] == ["chat", "interaction", "xmpp"]
    assert parameters["since"]["schema"]["type"] == "string" and "epoch" in parameters["since"]["description"]
    page = schema["components"]["schemas"][
        get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    ]
    assert set(page["properties"]) == {"next", "previous", "results"}
    assert "post" in schema["paths"]["/api/events/"]


def test_security_schemes(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schemes["apiKeyAuth"]["description"],
    }
    assert {"tokenAuth", "cookieAuth"} <= set(schemes)


def test_docs_use_the_sidecar_not_a_cdn():
    client = APIClient()
    page = client.get("/api/docs/")

    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    sidecar = [a for a in assets if "/drf_spectacular_sidecar/swagger-ui-dist/" in a]
    assert any(a.endswith("swagger-ui-bundle.js") for a in sidecar), assets
    assert not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    assert "cdn." not in html
    for asset in sidecar:
        assert client.get(asset).status_code == 200, asset  # served locally
