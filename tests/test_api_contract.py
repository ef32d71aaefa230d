"""schemathesis against the served OpenAPI schema (issue 12): every operation, called with
valid credentials and generated input, never answers 5xx, and its responses match the schema
(status codes, content types, bodies)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.conf import settings
from django.core import signals
from django.core.cache import cache
from django.db import close_old_connections
from django.test import override_settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
UNTHROTTLED = {scope: "100000/min" for scope in ("app", "analyst", "anon")}


@schemathesis.serializer("application/x-ndjson")
def ndjson_body(ctx: object, value: object) -> bytes:
    """The schema describes an NDJSON body as a string: sent as its UTF-8 bytes."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


# Loaded once, as it is served (the schema view needs no database). Valid input only:
# what a conforming client can send must get documented answers.
schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
schema.config.generation.update(modes=[GenerationMode.POSITIVE], max_examples=25)


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """As Django's test client does: a request must not close the test's database connection."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@pytest.mark.django_db
def test_every_operation_keeps_its_contract(case, app_key, analyst_token):
    cache.clear()
    # Apps post and read their batches; analysts read the rest (and see health's details).
    app_calls = case.method == "POST" or case.path.startswith("/api/batches/")
    authorization = f"Api-Key {app_key}" if app_calls else f"Token {analyst_token}"
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": UNTHROTTLED},
    ):
        case.call_and_validate(headers={"Authorization": authorization}, checks=CHECKS)


# Invalid input (negative testing): parameters, paths and bodies that break the schema. Every
# operation must still answer without a server error (a 4xx saying why, or an empty answer).
# Health takes no input at all: there is nothing invalid to send it.
negative_schema = schemathesis.openapi.from_wsgi("/api/schema/", application).exclude(path="/api/health/")
negative_schema.config.generation.update(modes=[GenerationMode.NEGATIVE], max_examples=15)


@negative_schema.parametrize()
@hypothesis_settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@pytest.mark.django_db
def test_every_operation_answers_invalid_input_without_a_server_error(case, app_key, analyst_token):
    cache.clear()
    app_calls = case.method == "POST" or case.path.startswith("/api/batches/")
    authorization = f"Api-Key {app_key}" if app_calls else f"Token {analyst_token}"
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": UNTHROTTLED},
    ):
        case.call_and_validate(headers={"Authorization": authorization}, checks=[not_a_server_error])
