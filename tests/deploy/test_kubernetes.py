"""The Kubernetes manifests: schema-valid, internally consistent, and consistent with the code."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import jsonpatch
import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.cli import build_parser
from tests.deploy.crd_schemas import CUSTOM_RESOURCE_SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
KUBERNETES_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_resources() -> list[dict]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs.extend(load_documents(BASE / name))
    return docs


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} named {name}, found {len(matches)}"
    return matches[0]


def is_builtin(doc: dict) -> bool:
    """Kubernetes' own kinds; any other kind needs a schema in CUSTOM_RESOURCE_SCHEMAS (or the
    Kubernetes-schema test fails on it: kubernetes-validate knows no custom resource)."""
    return (doc["apiVersion"], doc["kind"]) not in CUSTOM_RESOURCE_SCHEMAS


def test_every_kustomization_resource_exists():
    for kustomization in [BASE / "kustomization.yaml", *OVERLAYS.glob("*/kustomization.yaml")]:
        spec = yaml.safe_load(kustomization.read_text())
        for name in spec.get("resources", []):
            assert (kustomization.parent / name).exists(), f"{kustomization}: missing {name}"
        for patch in spec.get("patches", []):
            assert (kustomization.parent / patch["path"]).exists()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_manifests_validate_against_kubernetes_schemas(version):
    docs = [d for d in base_resources() if is_builtin(d)]
    assert {d["kind"] for d in docs} >= {
        "Namespace",
        "ConfigMap",
        "Secret",
        "StatefulSet",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def custom_resource_errors(doc: dict) -> list[str]:
    schema = CUSTOM_RESOURCE_SCHEMAS[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft202012Validator(schema)
    errors = validator.iter_errors(doc)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_custom_resource_schemas_are_valid_json_schemas():
    for schema in CUSTOM_RESOURCE_SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_custom_resources_validate_against_their_schemas():
    docs = [d for d in base_resources() if not is_builtin(d)]
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    for doc in docs:
        assert custom_resource_errors(doc) == [], doc["metadata"]["name"]


def scaled_object() -> dict:
    return copy.deepcopy(find(base_resources(), "ScaledObject", "worker"))


def redis_metadata(doc: dict) -> dict:
    return doc["spec"]["triggers"][0]["metadata"]


BROKEN_SCALED_OBJECTS: dict[str, Callable[[dict], object]] = {
    "unknown spec field": lambda d: d["spec"].update(maxReplicas=8),
    "unknown top-level field": lambda d: d.update(specs={}),
    "no target name": lambda d: d["spec"]["scaleTargetRef"].pop("name"),
    "unknown target field": lambda d: d["spec"]["scaleTargetRef"].update(namespace="hycas"),
    "replica count as a string": lambda d: d["spec"].update(maxReplicaCount="8"),
    "negative replica count": lambda d: d["spec"].update(minReplicaCount=-1),
    "polling interval as a float": lambda d: d["spec"].update(pollingInterval=1.5),
    "no triggers": lambda d: d["spec"].update(triggers=[]),
    "trigger without type": lambda d: d["spec"]["triggers"][0].pop("type"),
    "trigger without metadata": lambda d: d["spec"]["triggers"][0].pop("metadata"),
    "metadata number not a string": lambda d: redis_metadata(d).update(listLength=4),
    "redis without list name": lambda d: redis_metadata(d).pop("listName"),
    "redis without list length": lambda d: redis_metadata(d).pop("listLength"),
    "redis list length zero": lambda d: redis_metadata(d).update(listLength="0"),
    "redis unknown metadata key": lambda d: redis_metadata(d).update(list_name="celery"),
    "redis address without port": lambda d: redis_metadata(d).update(address="redis"),
    "redis without address": lambda d: redis_metadata(d).pop("address"),
    "redis database index not a number": lambda d: redis_metadata(d).update(databaseIndex="a"),
}


@pytest.mark.parametrize("breakage", BROKEN_SCALED_OBJECTS)
def test_the_scaled_object_schema_refuses_what_keda_would(breakage):
    doc = scaled_object()
    assert custom_resource_errors(doc) == []
    BROKEN_SCALED_OBJECTS[breakage](doc)
    assert custom_resource_errors(doc), f"{breakage} accepted"


def test_cpu_overlay_patch_applies_and_validates():
    docs = base_resources()
    worker = find(docs, "Deployment", "worker")
    patch = jsonpatch.JsonPatch(load_documents(OVERLAYS / "cpu-workers" / "worker-cpu.yaml")[0])
    patched = patch.apply(copy.deepcopy(worker))
    container = patched["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert {"name": "HYCAS_DEVICE", "value": "cpu"} in container["env"]
    kubernetes_validate.validate(patched, KUBERNETES_VERSIONS[-1], strict=True)


def test_services_select_their_deployments():
    docs = base_resources()
    workloads = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(
            selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
            for w in workloads
        ), f"Service {service['metadata']['name']} selects no pod"


def test_gateway_probes_and_resources():
    gateway = find(base_resources(), "Deployment", "gateway")
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"]
    assert container["command"][:2] == ["hycas", "serve"]


def test_workers_get_a_gpu_and_outlive_their_longest_task():
    docs = base_resources()
    worker = find(docs, "Deployment", "worker")
    spec = worker["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"][:2] == ["hycas", "worker"]
    time_limit = int(
        find(docs, "ConfigMap", "hycas-config")["data"]["HYCAS_TASK_TIME_LIMIT_SECONDS"]
    )
    assert spec["terminationGracePeriodSeconds"] > time_limit


def test_config_and_secret_references_resolve():
    docs = base_resources()
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names


def test_keda_scales_the_worker_on_the_celery_queue():
    docs = base_resources()
    scaled = find(docs, "ScaledObject", "worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    find(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == "celery"  # Celery's default queue key in Redis
    # KEDA runs in its own namespace: the address names the Service with the namespace the
    # kustomization puts everything in.
    namespace = yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"]
    host, port = trigger["metadata"]["address"].split(":")
    service = find(docs, "Service", host.split(".")[0])
    assert host == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert int(trigger["metadata"]["listLength"]) >= 1


def test_manifest_commands_parse_with_the_cli():
    parser = build_parser()
    for deployment in (d for d in base_resources() if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["command"][0] == "hycas"
            parser.parse_args(container["command"][1:])  # exits on an unknown command/flag


def _env_from_secret(container: dict, variable: str) -> tuple[str, str]:
    (entry,) = [e for e in container.get("env", []) if e["name"] == variable]
    reference = entry["valueFrom"]["secretKeyRef"]
    return reference["name"], reference["key"]


def _secret_keys(docs: list[dict]) -> dict[str, set[str]]:
    return {d["metadata"]["name"]: set(d["stringData"]) for d in docs if d["kind"] == "Secret"}


def test_redis_requires_the_password_of_the_secret_that_its_clients_use():
    docs = base_resources()
    secrets = _secret_keys(docs)
    (redis,) = find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    password = _env_from_secret(redis, "REDIS_PASSWORD")
    assert password[1] in secrets[password[0]]
    assert _env_from_secret(redis, "REDISCLI_AUTH") == password  # the probes authenticate
    for name in ("gateway", "worker"):
        (container,) = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert _env_from_secret(container, "REDIS_PASSWORD") == password
        (url,) = [e["value"] for e in container["env"] if e["name"] == "HYCAS_REDIS_URL"]
        assert url.startswith("redis://:$(REDIS_PASSWORD)@redis:6379/")
        names = [e["name"] for e in container["env"]]  # $(VAR) expands only earlier variables
        assert names.index("REDIS_PASSWORD") < names.index("HYCAS_REDIS_URL")
    config = find(docs, "ConfigMap", "hycas-config")
    assert "HYCAS_REDIS_URL" not in config["data"]  # a URL without the password


def test_keda_authenticates_to_redis_with_the_same_secret():
    docs = base_resources()
    (trigger,) = find(docs, "ScaledObject", "worker")["spec"]["triggers"]
    authentication = find(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (reference,) = authentication["spec"]["secretTargetRef"]
    assert reference["parameter"] == "password"
    (redis,) = find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    assert (reference["name"], reference["key"]) == _env_from_secret(redis, "REDIS_PASSWORD")
