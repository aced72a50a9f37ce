"""How long a job waits after its whole worker is SIGKILLed, with a second worker idle.

    python -m bench.worker_loss [--trials 2] [--heartbeat-timeout 30] [--reaper-interval 10]

Starts its own ``redis-server`` (append-only file), a gateway in this process and two real
``hycas worker`` processes (solo pool) serving the small test model. Each trial submits a job
long enough to outlive the measurement, SIGKILLs the worker running it once it has progressed,
and prints the seconds until the job is claimed again (its attempt count reaches 2) on the
idle worker; the killed worker is then replaced. Defaults are the service's: the promise is
heartbeat timeout + reaper period (40 s), against the broker's visibility timeout (665 s)
before the reaper existed. Run from the repository root.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from fastapi.testclient import TestClient

from bench.fault_cluster import start_fault_cluster
from service.main import create_app
from tests.workers.conftest import WorkerProcess
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource

LONG_JOB = {
    "model": SMALL_MODEL_ID,
    "image": np.full((8, 8), 0.4).tolist(),
    "methods": ["smoothing"],
    "n": 200_000,
    "batch_size": 500,
}


def wait_for(condition, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the job did not get there in time")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--heartbeat-timeout", type=float, default=30.0)
    parser.add_argument("--reaper-interval", type=float, default=10.0)
    args = parser.parse_args(argv)
    folder, server, settings = start_fault_cluster("worker-loss", args)
    print(
        f"heartbeat timeout {settings.heartbeat_timeout_seconds:g} s, reaper period "
        f"{settings.reaper_interval_seconds:g} s, visibility timeout "
        f"{settings.visibility_timeout_seconds} s"
    )
    workers = [WorkerProcess(settings, f"w{i}", folder / f"w{i}.log") for i in range(2)]
    try:
        for worker in workers:
            worker.wait_ready(timeout=120)
        with TestClient(create_app(settings, SmallModelSource())) as client:
            store = client.app.state.runtime.store
            for trial in range(args.trials):
                url = client.post("/v1/certify", json=LONG_JOB).json()["url"]

                def job(url: str = url) -> dict:
                    return client.get(url).json()

                wait_for(lambda: job()["progress"]["samples_done"] > 0)
                job_id = job()["id"]
                holder = store.heartbeat_holders([job_id])[0]
                victim = next(w for w in workers if holder.startswith(w.hostname))
                victim.kill()
                killed_at = time.monotonic()
                wait_for(lambda: job()["attempts"] == 2)
                print(f"trial {trial}: rerun {time.monotonic() - killed_at:.1f} s after SIGKILL")
                client.delete(url)
                workers.remove(victim)
                victim.stop()
                workers.append(WorkerProcess(settings, f"r{trial}", folder / f"r{trial}.log"))
                workers[-1].wait_ready(timeout=120)
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
