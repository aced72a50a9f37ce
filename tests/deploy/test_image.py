"""What goes into the image: the shipped model only, no local secrets, the tested torch."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.sources import ROOT, copy_sources, dockerfile_arg_default, dockerignore_excludes

SHIPPED_MODEL = "model_repository/digits-hycas"


def tracked_files(path: str) -> list[str]:
    result = subprocess.run(
        ["git", "ls-files", "--", path], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_image_copies_only_the_shipped_demo_model():
    model_sources = [s for s in copy_sources() if s.strip("/").startswith("model_repository")]
    assert model_sources == [SHIPPED_MODEL]


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("model_repository/my-model/1/model.safetensors", True),  # `hycas train` output
        ("model_repository/digits-hycas-v2/1/model.json", True),
        (f"{SHIPPED_MODEL}/1/model.safetensors", False),
        (".env", True),
        (".git/config", True),
        ("service/__pycache__/main.cpython-311.pyc", True),
        ("deploy/k8s/base/worker.yaml", True),
        ("deploy/docker/healthcheck.py", False),
        ("service/main.py", False),
    ],
)
def test_dockerignore_keeps_local_models_and_secrets_out_of_the_build_context(path, excluded):
    assert dockerignore_excludes(path) == excluded


def test_every_copied_file_reaches_the_build_context():
    for source in copy_sources():
        files = tracked_files(source)
        assert files, f"COPY {source}: no tracked file there"
        for path in files:
            assert not dockerignore_excludes(path), f"COPY {source}: .dockerignore drops {path}"


def pinned_torch_versions(text: str) -> set[str]:
    return set(re.findall(r"\btorch==([0-9][0-9a-z.+]*)", text))


def test_image_runs_the_torch_the_tests_run_on():
    image = dockerfile_arg_default("TORCH_VERSION")
    readme = pinned_torch_versions((ROOT / "README.md").read_text())
    ci = pinned_torch_versions((ROOT / ".ci" / "run").read_text())
    assert readme == {image}, f"README installs torch {readme}, the image {image}"
    assert ci == {image}, f".ci/run installs torch {ci}, the image {image}"
