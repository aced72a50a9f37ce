"""The image's HEALTHCHECK (deploy/docker/healthcheck.py) for both roles, and who uses it."""

from __future__ import annotations

import http.server
import importlib.util
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy.sources import ROOT, compose, dockerfile, final_stage, hycas_services

SCRIPT = ROOT / "deploy" / "docker" / "healthcheck.py"
_spec = importlib.util.spec_from_file_location("hycas_image_healthcheck", SCRIPT)
healthcheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(healthcheck)


def fake_proc(tmp_path: Path, processes: dict[int, list[str]]) -> Path:
    """A /proc with one `cmdline` (NUL-separated argv) per process id."""
    proc = tmp_path / "proc"
    for pid, argv in processes.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (proc / "self").mkdir()
    return proc


def console_script(args: list[str]) -> list[str]:
    """The argv the kernel shows for `hycas ARGS` run through the venv's console script."""
    return ["/opt/venv/bin/python3.11", "/opt/venv/bin/hycas", *args]


class Endpoint:
    """A loopback HTTP server answering one path with a given status."""

    def __init__(self, path: str, status: int) -> None:
        path_, status_ = path, status

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status_ if self.path == path_ else 404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Callable[[str, int], Endpoint]]:
    started: list[Endpoint] = []

    def start(path: str, status: int) -> Endpoint:
        started.append(Endpoint(path, status))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_gateway_is_healthy_when_healthz_answers_on_its_port(tmp_path, endpoint):
    gateway = endpoint("/healthz", 200)
    args = ["serve", "--host", "0.0.0.0", "--port", str(gateway.port)]
    proc = fake_proc(tmp_path, {1: console_script(args)})
    assert healthcheck.main(proc, env={}) == 0


def test_gateway_that_fails_healthz_is_unhealthy(tmp_path, endpoint):
    gateway = endpoint("/healthz", 503)
    proc = fake_proc(tmp_path, {1: console_script(["serve", f"--port={gateway.port}"])})
    assert healthcheck.main(proc, env={}) == 1


def test_worker_is_healthy_when_its_metrics_port_answers(tmp_path, endpoint):
    metrics = endpoint("/metrics", 200)
    # Behind an init process (docker run --init): PID 1 is not hycas.
    init = ["/sbin/docker-init", "--", "hycas"]
    proc = fake_proc(tmp_path, {1: init, 7: console_script(["worker", "--concurrency", "1"])})
    env = {"HYCAS_WORKER_METRICS_PORT": str(metrics.port)}
    assert healthcheck.main(proc, env=env) == 0


def test_worker_whose_metrics_server_is_down_is_unhealthy(tmp_path, endpoint):
    closed = endpoint("/metrics", 200)
    closed.close()
    proc = fake_proc(tmp_path, {1: console_script(["worker"])})
    assert healthcheck.main(proc, env={"HYCAS_WORKER_METRICS_PORT": str(closed.port)}) == 1


def test_worker_metrics_port_flag_overrides_the_environment():
    url = healthcheck.probe_url(
        ["worker", "--metrics-port", "9100"], {"HYCAS_WORKER_METRICS_PORT": "9808"}
    )
    assert url == "http://127.0.0.1:9100/metrics"


def test_no_hycas_process_is_unhealthy(tmp_path):
    proc = fake_proc(tmp_path, {1: ["/bin/sh", "-c", "sleep infinity"], 2: ["hycas"]})
    assert healthcheck.hycas_command(proc) is None
    assert healthcheck.main(proc, env={}) == 1


def dockerfile_healthcheck_command() -> list[str]:
    (value,) = [
        i["value"] for i in final_stage(dockerfile().structure) if i["instruction"] == "HEALTHCHECK"
    ]
    return json.loads(value[value.index("CMD") + 3 :])


def test_image_healthcheck_runs_the_script_it_copies():
    command = dockerfile_healthcheck_command()
    copies = [
        i["value"].split()
        for i in dockerfile().structure
        if i["instruction"] == "COPY" and i["value"].split()[-1] == command[-1]
    ]
    assert copies and copies[0][-2] == str(SCRIPT.relative_to(ROOT))
    assert dockerfile().envs["HYCAS_WORKER_METRICS_PORT"] == "9808"


def test_compose_runs_the_image_check_and_it_probes_each_role_where_it_listens():
    image_env = dockerfile().envs
    for name, service in hycas_services(compose()["services"]).items():
        assert service["healthcheck"]["test"] == ["CMD", *dockerfile_healthcheck_command()], name
        command = service["command"]
        url = healthcheck.probe_url(command[1:], {**image_env, **service["environment"]})
        if command[1] == "serve":
            assert url == f"http://127.0.0.1:{command[command.index('--port') + 1]}/healthz"
        else:
            port = service["environment"]["HYCAS_WORKER_METRICS_PORT"]
            assert url == f"http://127.0.0.1:{port}/metrics", name
