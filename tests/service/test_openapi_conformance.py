"""The OpenAPI schema states what the server accepts: schemathesis generates requests from it
(valid ones and ones that break it) against the app in process and checks every answer.

Checks: no 5xx, status codes and content types the schema documents, response bodies that
match their schema, and requests that break the schema refused (negative data rejection).
The default run is small (a bounded number of examples per operation); ``-m slow`` runs more.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from service.main import create_app
from tests.service.conftest import embedded_settings
from tests.workers.small_models import SmallModelSource

EXAMPLES = 25
"""Examples per operation and mode: enough to find a disagreement, a minute or so in all."""
EXAMPLES_SLOW = 200

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _small_app():  # type: ignore[no-untyped-def]
    """An embedded app whose limits keep generated jobs tiny (they really run)."""
    return create_app(
        embedded_settings(
            max_n=300,
            max_n0=50,
            max_batch_size=100,
            max_ensemble=2,
            max_wait_seconds=0,
            max_batch_images=4,
            max_image_pixels=64 * 64,
            max_upload_bytes=64 * 1024,
        ),
        SmallModelSource(),
    )


def _schema(examples: int) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "generation": {"mode": "all", "max-examples": examples},
            # Every refusal the API documents counts as rejecting a schema-breaking request.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [
                        "400",
                        "401",
                        "404",
                        "405",
                        "408",
                        "409",
                        "413",
                        "415",
                        "422",
                    ]
                }
            },
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", _small_app(), config=config)


schema = _schema(EXAMPLES)
heavier_schema = _schema(EXAMPLES_SLOW)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_server_answers_as_its_schema_says(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


@pytest.mark.slow
@heavier_schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_server_answers_as_its_schema_says_over_many_random_requests(
    case: schemathesis.Case,
) -> None:
    case.call_and_validate(checks=CHECKS)


def test_the_schema_states_one_image_form_and_a_non_empty_form_model():
    from fastapi.testclient import TestClient

    with TestClient(_small_app()) as client:
        document = client.get("/openapi.json").json()
        bodies = {
            path: document["paths"][path]["post"]["requestBody"]["content"]
            for path in ("/v1/certify", "/v1/batches")
        }
        certify_json = bodies["/v1/certify"]["application/json"]["schema"]
        batch_item = bodies["/v1/batches"]["application/json"]["schema"]["properties"]["images"]
        for schema in (certify_json, batch_item["items"]):
            assert [branch["required"] for branch in schema["oneOf"]] == [
                ["image_base64"],
                ["image"],
            ]
        for content in bodies.values():
            form = content["multipart/form-data"]["schema"]
            assert form["properties"]["model"]["minLength"] == 1
            assert form["properties"]["n"]["type"] == "integer"
            assert form["additionalProperties"] is False
        both = {"model": "m", "image": [[0.5]], "image_base64": "AA=="}
        assert client.post("/v1/certify", json=both).status_code == 422
        assert client.post("/v1/certify", json={"model": "m"}).status_code == 422
        empty = client.post("/v1/certify", data={"model": ""}, files={"file": ("a.png", b"x")})
        assert empty.status_code == 422


def test_a_method_not_allowed_says_which_are():
    from fastapi.testclient import TestClient

    with TestClient(_small_app()) as client:
        for method, path, allowed in [
            ("PUT", "/v1/jobs/abc", "GET, DELETE"),
            ("GET", "/v1/certify", "POST"),
            ("POST", "/healthz", "GET"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 405
            assert response.headers["allow"] == allowed
            assert response.json()["error"]["code"] == "method_not_allowed"
