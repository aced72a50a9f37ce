"""The shared model repository in the deployment files: a volume every gateway and worker
mounts (Kubernetes base, compose), or a bucket with its credentials in a Secret (the
model-bucket overlay); the image registers its demo model there and installs the s3 and onnx
extras."""

from __future__ import annotations

import copy
import tomllib

import jsonpatch
import kubernetes_validate
import yaml

from service.cli import build_parser
from service.core.config import Settings
from tests.deploy.sources import ROOT, compose, dockerfile, hycas_services
from tests.deploy.test_kubernetes import (
    KUBERNETES_VERSIONS,
    OVERLAYS,
    base_resources,
    find,
    load_documents,
)

BUCKET = OVERLAYS / "model-bucket"


def containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def mounts_of(container: dict, volume: str) -> list[dict]:
    return [m for m in container.get("volumeMounts", []) if m["name"] == volume]


def test_gateways_and_workers_mount_one_volume_at_the_configured_repository():
    docs = base_resources()
    repository = find(docs, "ConfigMap", "hycas-config")["data"]["HYCAS_MODEL_REPOSITORY"]
    claim = find(docs, "PersistentVolumeClaim", "hycas-models")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, writes in (("gateway", True), ("worker", False)):
        deployment = find(docs, "Deployment", name)
        (volume,) = [
            v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models"
        ]
        assert volume["persistentVolumeClaim"]["claimName"] == "hycas-models"
        for container in containers(deployment):
            (mount,) = mounts_of(container, "models")
            assert mount["mountPath"] == repository
            assert mount.get("readOnly", False) is not writes, (name, container["name"])


def test_the_gateway_registers_the_images_demo_model_with_the_cli():
    gateway = find(base_resources(), "Deployment", "gateway")
    (init,) = gateway["spec"]["template"]["spec"]["initContainers"]
    args = build_parser().parse_args(init["command"][1:])
    assert init["command"][:3] == ["hycas", "models", "push"] and args.skip_existing
    copied = [
        i["value"].split()
        for i in dockerfile().structure
        if i["instruction"] == "COPY" and "model_repository/digits-hycas" in i["value"]
    ]
    (copy_instruction,) = copied
    image_path = copy_instruction[-1]
    assert args.path == f"{image_path}/1"
    assert (ROOT / copy_instruction[-2] / "1" / "model.json").is_file()


def test_admin_keys_are_a_secret_and_a_setting():
    secret = find(base_resources(), "Secret", "hycas-api-keys")
    assert "HYCAS_ADMIN_API_KEYS" in secret["stringData"]
    assert {"admin_api_keys", "model_repository", "model_cache_dir"} <= set(Settings.model_fields)


def bucket_overlay() -> list[dict]:
    """The base with the model-bucket overlay applied as kustomize would."""
    spec = yaml.safe_load((BUCKET / "kustomization.yaml").read_text())
    docs = copy.deepcopy(base_resources())
    for resource in spec["resources"]:
        if not resource.startswith(".."):
            docs += load_documents(BUCKET / resource)
    for patch in spec["patches"]:
        documents = load_documents(BUCKET / patch["path"])
        if "target" in patch:
            target = find(docs, patch["target"]["kind"], patch["target"]["name"])
            patched = jsonpatch.JsonPatch(
                documents[0] if isinstance(documents[0], list) else documents
            ).apply(target)
            docs[docs.index(target)] = patched
            continue
        (merge,) = documents
        target = find(docs, merge["kind"], merge["metadata"]["name"])
        if merge.get("$patch") == "delete":
            docs.remove(target)
        else:
            target["data"].update(merge["data"])
    return docs


def test_the_bucket_overlay_reads_the_repository_from_s3_with_the_secrets_credentials():
    docs = bucket_overlay()
    config = find(docs, "ConfigMap", "hycas-config")["data"]
    assert config["HYCAS_MODEL_REPOSITORY"].startswith("s3://")
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    store = find(docs, "Secret", "hycas-model-store")["stringData"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(store)
    for name in ("gateway", "worker"):
        deployment = find(docs, "Deployment", name)
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
        (volume,) = [
            v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models"
        ]
        assert volume == {"name": "models", "emptyDir": {}}
        for container in containers(deployment):
            sources = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
            assert "hycas-model-store" in sources, (name, container["name"])
            (mount,) = mounts_of(container, "models")
            assert mount["mountPath"] == config["HYCAS_MODEL_CACHE_DIR"]
            assert not mount.get("readOnly", False)  # the mirror is written


def test_compose_gateway_and_workers_share_a_named_volume_at_the_repository():
    services = compose()
    volumes = services["volumes"]
    for name, service in hycas_services(services["services"]).items():
        repository = service["environment"]["HYCAS_MODEL_REPOSITORY"]
        assert f"models:{repository}" in service["volumes"], name
        assert "HYCAS_ADMIN_API_KEYS" in service["environment"], name
    assert "models" in volumes


def test_the_image_installs_the_extras_for_a_bucket_and_onnx_models():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installs = [i["value"] for i in dockerfile().structure if "pip install" in i["value"]]
    (package,) = [line for line in installs if '"./[' in line]
    wanted = package.split('"./[')[1].split("]")[0].split(",")
    assert set(wanted) == {"s3", "onnx"} and set(wanted) <= set(extras)
