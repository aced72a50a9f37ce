"""The README's Deploy section against docker-compose.yml: what it names and tells to run exists."""

from __future__ import annotations

import re
import shlex

import pytest

from service.core.config import Settings
from tests.deploy.sources import (
    ROOT,
    compose,
    compose_text,
    dockerfile,
    fenced_blocks,
    inline_code,
    readme_paragraph,
    readme_section,
    worker_services,
)

DEPLOY = readme_section("Deploy")
ONE_MACHINE = readme_paragraph(DEPLOY, "One machine")
SERVICE_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# `docker compose` options that take a value (the rest are flags).
VALUED_OPTIONS = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--scale"}


def compose_commands() -> list[list[str]]:
    return [shlex.split(c) for c in inline_code(DEPLOY) if c.startswith("docker compose")]


def profiles() -> set[str]:
    return {p for s in compose()["services"].values() for p in s.get("profiles", [])}


def test_every_service_the_compose_paragraph_names_exists_and_none_is_left_out():
    named = {c for c in inline_code(ONE_MACHINE) if SERVICE_NAME.fullmatch(c)}
    services = set(compose()["services"])
    assert named <= services, f"README names services compose lacks: {named - services}"
    assert services <= named, f"README leaves out services: {services - named}"


def test_every_docker_compose_command_uses_existing_services_profiles_and_files():
    commands = compose_commands()
    assert len(commands) >= 3
    for argv in commands:
        assert argv[:2] == ["docker", "compose"], argv
        positional = []
        args = iter(argv[2:])
        for arg in args:
            name, _, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            value = (inline or next(args)) if name in VALUED_OPTIONS else None
            if name == "--profile":
                assert value in profiles(), f"{argv}: no service has profile {value}"
            elif name == "--scale":
                service = value.split("=")[0]
                assert service in compose()["services"], f"{argv}: no service {service}"
            elif name in {"-f", "--file", "--env-file"}:
                assert (ROOT / value).exists(), f"{argv}: no file {value}"
            elif not arg.startswith("-"):
                positional.append(arg)
        # `up`, `logs`, ... then service names.
        for service in positional[1:]:
            assert service in compose()["services"], f"{argv}: no service {service}"


def test_published_ports_are_the_ones_the_readme_gives():
    services = compose()["services"]
    mentioned = re.findall(r"`([a-z][\w-]*)` on :(\d+)", " ".join(ONE_MACHINE.split()))
    assert len(mentioned) >= 3
    for name, port in mentioned:
        published = {p.split(":")[0] for p in services[name].get("ports", [])}
        assert port in published, f"README: {name} on :{port}; compose publishes {published}"


def test_the_readme_gpu_worker_snippet_adds_a_worker_on_its_own_gpu():
    (snippet,) = fenced_blocks(DEPLOY, "yaml")
    text = compose_text()
    # As the README says: the snippet goes under `services:` of docker-compose.yml.
    extended = compose(text.replace("\nservices:\n", "\nservices:\n" + snippet, 1))
    services = extended["services"]
    (added,) = set(services) - set(compose()["services"])
    new, first = services[added], services["worker-gpu"]
    devices = new["deploy"]["resources"]["reservations"]["devices"]
    assert devices != first["deploy"]["resources"]["reservations"]["devices"]
    assert [d["device_ids"] for d in devices] == [["1"]]
    assert {k: v for k, v in new.items() if k != "deploy"} == {
        k: v for k, v in first.items() if k != "deploy"
    }
    assert added in worker_services(services)
    anchors = {c for c in inline_code(DEPLOY) if c.startswith("x-")}
    assert anchors and anchors <= set(compose()), f"README names missing blocks {anchors}"


def test_the_network_alias_the_readme_gives_is_every_workers_and_scraped():
    (alias,) = re.findall(r"alias `([\w-]+)`", DEPLOY)
    for name, worker in worker_services(compose()["services"]).items():
        assert alias in worker["networks"]["default"]["aliases"], name
    assert f'names: ["{alias}"]' in (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()


def documented_settings() -> set[str]:
    """The HYCAS_ variables of the README's settings table."""
    table = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("|")]
    return {v for line in table for v in re.findall(r"`(HYCAS_[A-Z0-9_]+)`", line)}


def setting_names() -> set[str]:
    return {f"HYCAS_{name.upper()}" for name in Settings.model_fields}


def test_every_variable_the_deploy_section_names_is_used():
    compose_file = compose_text()
    for variable in set(re.findall(r"\b((?:HYCAS|GRAFANA)_[A-Z0-9_]+)\b", DEPLOY)):
        if variable.startswith("HYCAS_"):
            assert variable in setting_names(), f"{variable} is no setting of the code"
        in_compose = "${" + variable in compose_file or f"{variable}:" in compose_file
        assert in_compose or variable in dockerfile().envs, f"{variable}: used nowhere"


def test_variables_the_readme_says_to_set_are_read_from_the_environment_by_compose():
    sentence = re.search(r"Set (.*?) in the environment", " ".join(ONE_MACHINE.split()))
    variables = re.findall(r"`([A-Z][A-Z0-9_]+)`", sentence.group(1))
    assert variables
    for variable in variables:
        assert "${" + variable in compose_text(), f"compose never reads {variable}"


@pytest.mark.parametrize("source", ["compose", "kubernetes", "image"])
def test_every_deployed_setting_is_a_documented_setting_of_the_code(source):
    if source == "compose":
        variables = {v for s in compose()["services"].values() for v in s.get("environment", {})}
    elif source == "kubernetes":
        text = "".join(p.read_text() for p in (ROOT / "deploy" / "k8s").rglob("*.yaml"))
        variables = set(re.findall(r"\b(HYCAS_[A-Z0-9_]+)\b", text))
    else:
        variables = set(dockerfile().envs)
    hycas = {v for v in variables if v.startswith("HYCAS_")}
    assert hycas, source
    assert hycas <= setting_names(), f"not settings of the code: {hycas - setting_names()}"
    assert hycas <= documented_settings(), f"not in the README: {hycas - documented_settings()}"
