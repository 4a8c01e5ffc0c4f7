"""A bounded schemathesis run over serving's OpenAPI schema (scoring, health, metrics and the admin API with its
token): no 5xx, no status code or content type the schema does not document, bodies that match it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contracts.settings import load_settings
from domain_registry import open_registry
from feature_store import open_store
from serving.app import create_app
from tests.support.tiny_model import cached_tiny, publish_demo

TOKEN = "fuzz-" + uuid.uuid4().hex
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    tiny = cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)
    store = open_store(f"memory://fuzz-{uuid.uuid4().hex}")
    registry = open_registry(f"sqlite://{tmp}/registry.db")
    publish_demo(tiny, tmp / "art", store, registry, "v1")
    app = create_app(load_settings(**{"artifacts_url": f"file://{tmp / 'art'}", "registry.admin_token": TOKEN}),
                     feature_store=store, registry=registry)
    from fastapi.testclient import TestClient

    with TestClient(app):  # runs the lifespan: the model is loaded before the first generated request
        yield app
    registry.close()


def test_every_route_answers_as_documented(app) -> None:  # type: ignore[no-untyped-def]
    """Each operation gets its own bounded, derandomized hypothesis run (schemathesis' pytest plugin does not
    load fixtures under this pytest, so the operations are driven here)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    seen: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

        run()
        seen.append(operation.label)
    assert any("/ctr" in label for label in seen) and any("/v1/models" in label for label in seen)
