"""``hycas models push PATH --server URL`` against a real ``hycas serve``: the operator's path
from a package on disk to a model the running service lists and certifies with."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from tests.models.packages import save_package
from tests.service.gateway_process import GatewayProcess

pytestmark = pytest.mark.slow


def test_an_operator_pushes_a_package_to_a_running_server_and_certifies_with_it(
    tmp_path: Path, capsys
):
    repository = tmp_path / "repository"
    gateway = GatewayProcess(
        tmp_path / "gateway.log",
        model_repository=str(repository),
        api_keys="user-key",
        admin_api_keys="admin-key",
        default_n="200",
    )
    try:
        gateway.wait_ready()
        folder = save_package(tmp_path / "trained")
        push = ["models", "push", str(folder), "--server", gateway.url]
        assert main([*push, "--api-key", "user-key"]) == 2
        assert "(403 forbidden)" in capsys.readouterr().err
        assert main([*push, "--api-key", "admin-key"]) == 0, gateway.log()
        assert f"registered tiny version 1 on {gateway.url}" in capsys.readouterr().out

        request = urllib.request.Request(
            f"{gateway.url}/v1/certify?wait=60",
            data=json.dumps({"model": "tiny", "image": np.full((8, 8), 0.5).tolist()}).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": "user-key"},
        )
        with urllib.request.urlopen(request, timeout=90) as response:
            job = json.load(response)
        assert job["status"] == "succeeded", job
        assert job["result"]["provenance"]["model"]["id"] == "tiny"
    finally:
        gateway.stop()
