"""Seeds are 63-bit: accepted as a number or a string, always returned as a string (JavaScript
reads JSON numbers as doubles and would round them), and a returned seed replays the job."""

from __future__ import annotations

import pytest

from tests.service.conftest import png_bytes
from tests.workers.small_models import SMALL_MODEL_ID

BIG_SEED = "818635474839927637"
"""Above 2**53: a JavaScript client reading it as a number gets 818635474839927700."""

IMAGE = [[0.25, 0.5, 0.75, 1.0, 0.0, 0.5, 0.25, 0.75]] * 8


def certify_json(client, **fields) -> dict:
    response = client.post(
        "/v1/certify?wait=30",
        json={"model": SMALL_MODEL_ID, "image": IMAGE, "n": 200, "n0": 20, **fields},
    )
    assert response.status_code == 200, response.text
    return response.json()


def seeds_in(node, key=""):
    """Every value under a key naming a seed, anywhere in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from seeds_in(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from seeds_in(item, key)
    elif key == "seed" or key.endswith(("_seed", "seeds")):
        yield node


def test_a_string_seed_comes_back_as_a_string_everywhere_and_replays(client):
    methods = ["smoothing", "margin", "radius_test"]
    first = certify_json(client, seed=BIG_SEED, methods=methods, ensemble=3, target_radius=0.1)
    result = first["result"]
    assert first["parameters"]["seed"] == BIG_SEED
    assert result["provenance"]["seed"] == BIG_SEED
    assert result["provenance"]["parameters"]["seed"] == BIG_SEED
    for certificate in result["certificates"].values():
        assert certificate["details"]["seed"] == BIG_SEED
    omega_seeds = result["certificates"]["margin"]["details"]["omega_seeds"]
    assert len(omega_seeds) == 3
    seeds = list(seeds_in(first))
    assert len(seeds) > 6 and all(isinstance(s, str) and s.isdigit() for s in seeds)

    # A client replays the job from what it read back, without ever parsing a number.
    replay = certify_json(
        client,
        seed=result["provenance"]["seed"],
        methods=methods,
        ensemble=3,
        target_radius=0.1,
    )
    assert replay["result"]["certificates"] == {
        method: {**certificate, "seconds": replay["result"]["certificates"][method]["seconds"]}
        for method, certificate in result["certificates"].items()
    }
    again = client.get(f"/v1/jobs/{replay['id']}").json()
    assert again["result"]["provenance"]["seed"] == BIG_SEED


def test_a_number_seed_is_accepted_and_returned_as_a_string(client):
    job = certify_json(client, seed=int(BIG_SEED), methods=["margin"])
    assert job["parameters"]["seed"] == BIG_SEED
    assert job["result"]["provenance"]["seed"] == BIG_SEED


def test_a_fresh_seed_is_returned_as_a_string_too(client):
    job = certify_json(client, methods=["margin"])
    assert isinstance(job["result"]["provenance"]["seed"], str)
    assert 0 <= int(job["result"]["provenance"]["seed"]) < 2**63


def test_a_multipart_seed_replays_the_json_job(client):
    json_job = certify_json(client, seed=BIG_SEED, methods=["smoothing"])
    response = client.post(
        "/v1/certify?wait=30",
        files={"file": ("digit.png", png_bytes((8, 8)), "image/png")},
        data={"model": SMALL_MODEL_ID, "seed": BIG_SEED, "methods": "smoothing", "n": "200"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["seed"] == BIG_SEED
    smoothing = json_job["result"]["certificates"]["smoothing"]["details"]
    assert (
        smoothing["seed"]
        == response.json()["result"]["certificates"]["smoothing"]["details"]["seed"]
    )


@pytest.mark.parametrize("seed", ["-1", "12a", "1.5", "9223372036854775808", True, -3, ""])
def test_a_seed_that_is_not_a_63_bit_integer_is_refused(client, seed):
    response = client.post(
        "/v1/certify", json={"model": SMALL_MODEL_ID, "image": IMAGE, "seed": seed}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "seed" in response.json()["error"]["message"]


def test_the_schema_says_seeds_are_sent_as_numbers_or_strings_and_returned_as_strings(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    parameters = schemas.get(
        "CertificationParameters-Output", schemas.get("CertificationParameters")
    )
    assert parameters["properties"]["seed"]["type"] == "string"
    body = spec["paths"]["/v1/certify"]["post"]["requestBody"]["content"]["application/json"]
    kinds = {
        option.get("type") for option in body["schema"]["properties"]["seed"]["anyOf"][0]["anyOf"]
    }
    assert kinds == {"integer", "string"}
