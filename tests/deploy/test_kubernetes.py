"""The Kubernetes manifests: schema-valid, internally consistent, and consistent with the code."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from service.cli import build_parser

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
    return not doc["apiVersion"].startswith("keda.sh/")


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
    assert trigger["metadata"]["address"].startswith("redis.")
    find(docs, "Service", trigger["metadata"]["address"].split(".")[0])
    assert int(trigger["metadata"]["listLength"]) >= 1


def test_manifest_commands_parse_with_the_cli():
    parser = build_parser()
    for deployment in (d for d in base_resources() if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["command"][0] == "hycas"
            parser.parse_args(container["command"][1:])  # exits on an unknown command/flag
