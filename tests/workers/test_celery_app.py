"""The Celery configuration for long certification tasks, and the model cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from service.cli import main
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource
from workers.app import create_celery_app
from workers.config import ExecutionSettings
from workers.model_cache import ModelCache, UnknownModelError


def test_long_tasks_are_acknowledged_late_and_never_duplicated():
    settings = ExecutionSettings(
        redis_url="redis://127.0.0.1:6379/11", task_time_limit_seconds=900, key_prefix="p:"
    )
    conf = create_celery_app(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit > 900 and conf.task_time_limit > conf.task_soft_time_limit
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.broker_url == conf.result_backend == "redis://127.0.0.1:6379/11"
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_default_queue == "celery"
    assert conf.result_backend_transport_options == {"global_keyprefix": "p:"}
    assert conf.result_expires == settings.result_ttl_seconds


def test_a_closed_broker_connection_is_a_connection_error_not_an_unrecoverable_one():
    """Closing a channel after its connection's client was cleared raised ``AttributeError``,
    which Celery treats as unrecoverable (the worker exited on a Redis restart): it must be an
    error of the transport's ``connection_errors``, which Celery ignores while closing."""
    from kombu import Connection

    from workers import broker

    settings = ExecutionSettings(redis_url="redis://127.0.0.1:6379/11")
    app = create_celery_app(settings)
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, broker.Transport)
        channel = connection.default_channel
        assert channel._connparams()["host"] == "127.0.0.1"
        connection.transport.client = None
        with pytest.raises(connection.connection_errors, match="broker connection is closed"):
            channel._connparams()
    tls = Connection("rediss://127.0.0.1:6380/0", transport=broker.TRANSPORT, ssl={"a": 1})
    assert tls.transport_cls == broker.TRANSPORT and tls.port == 6380 and tls.ssl == {"a": 1}


def test_a_visibility_timeout_below_the_time_limit_is_refused():
    with pytest.raises(ValidationError, match="must exceed the hard task time limit"):
        ExecutionSettings(task_time_limit_seconds=600, broker_visibility_timeout_seconds=300)


def test_hycas_worker_needs_redis(monkeypatch, capsys):
    monkeypatch.delenv("HYCAS_REDIS_URL", raising=False)
    assert main(["worker"]) == 2
    assert "HYCAS_REDIS_URL" in capsys.readouterr().err


def test_models_load_once_per_process_and_again_after_a_fork():
    class CountingSource(SmallModelSource):
        loads = 0

        def load(self, model_id, version):
            CountingSource.loads += 1
            return super().load(model_id, version)

    cache = ModelCache(CountingSource(), "cpu")
    first = cache.get(SMALL_MODEL_ID)
    assert cache.get(SMALL_MODEL_ID) is first
    assert cache.get(SMALL_MODEL_ID, "1") is first
    assert CountingSource.loads == 1
    assert first.device == "cpu" and not first.model.training
    cache._pid = os.getpid() + 1  # as a forked child would see it
    assert cache.get(SMALL_MODEL_ID) is not first
    with pytest.raises(UnknownModelError, match="available"):
        cache.get("no-such-model")


def test_a_worker_parent_never_touches_cuda_before_it_forks():
    """Importing the tasks and building the app (what a prefork parent does before forking)
    calls no ``torch.cuda`` function: CUDA is initialised in the child, at its first job."""
    code = textwrap.dedent(
        """
        import torch

        def refuse(*args, **kwargs):
            raise AssertionError("torch.cuda was used before the worker forked")

        for name in ("is_available", "init", "_lazy_init", "device_count", "current_device"):
            setattr(torch.cuda, name, refuse)

        import workers.tasks
        from service.cli import main  # noqa: F401  (the ``hycas worker`` entry point)
        from workers.app import app

        app.loader.import_default_modules()
        assert "hycas.certify_job" in app.tasks
        workers.tasks.process_runner.cache_clear()
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYCAS_")}
    env["HYCAS_REDIS_URL"] = "redis://127.0.0.1:6379/11"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
