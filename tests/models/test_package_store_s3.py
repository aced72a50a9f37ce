"""The repository in an S3 bucket, against a real S3-compatible HTTP server on loopback:
moto's server mode (an S3 emulator from PyPI, started by the test), reached through s3fs with
the credentials and endpoint a deployment's Secret gives (``AWS_*`` variables). A version
published, mirrored after its SHA-256 check, loaded by a worker's cache without a restart, and
retired, as on a volume."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.package_store import PackageStore
from models.registration import register_package
from tests.models.packages import package_files, save_package
from workers.model_cache import ModelCache, RepositorySource

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty bucket on a fresh S3 emulator; the URL of a repository in it."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }.items():
        monkeypatch.setenv(name, value)
    # The emulator keeps its buckets in the process: a name of this test's own.
    bucket = f"hycas-models-{uuid.uuid4().hex[:12]}"
    store = PackageStore(f"s3://{bucket}/repository")
    store.fs.mkdir(bucket)
    try:
        yield store.location
    finally:
        server.stop()


def test_a_repository_in_a_bucket_publishes_serves_and_retires(bucket, tmp_path: Path):
    store = PackageStore(bucket)
    assert not store.is_local and store.model_ids() == []
    cache = ModelCache(RepositorySource(bucket, tmp_path / "mirror"), "cpu", refresh_seconds=60)
    trained = tmp_path / "trained"
    register_package(store, package_files(save_package(trained, version="1")))
    assert cache.get("tiny").version == "1"

    register_package(store, package_files(save_package(trained, version="2")))
    assert cache.get("tiny", "2").version == "2"  # an unlisted version is listed at once
    assert sorted(p.name for p in (tmp_path / "mirror").glob("*/tiny/*")) == ["1", "2"]

    store.retire("tiny", "2", by="admin")
    cache.forget_listing("tiny")
    assert cache.is_retired("tiny", "2") and cache.get("tiny").version == "1"
    assert cache.get("tiny", "2").version == "2"  # jobs queued for it still run
    assert store.versions("tiny") == ["1", "2"]


def test_weights_changed_in_the_bucket_make_the_version_unavailable(bucket, tmp_path: Path):
    store = PackageStore(bucket)
    register_package(store, package_files(save_package(tmp_path / "trained")))
    weights = f"{store.root}/tiny/1/model.safetensors"
    store.fs.pipe_file(weights, store.fs.cat_file(weights)[:-1] + b"\0")
    cache = ModelCache(RepositorySource(bucket, tmp_path / "mirror"), "cpu")
    (status,) = cache.version_statuses()
    assert not status.available and "SHA-256" in status.reason
