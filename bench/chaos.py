"""Chaos: a mixed workload while workers are killed and Redis is restarted at random.

    python -m bench.chaos [--duration 60] [--workers 2] [--seed 0] [--fault-every 6]
                          [--heartbeat-timeout 3] [--reaper-interval 1] [--fsync always]

Starts its own ``redis-server`` (append-only file, a free port, a temporary folder), a
gateway (in this process) and ``--workers`` real ``hycas worker`` processes (solo and prefork
pools alternating) serving the small test model. For ``--duration`` seconds it submits single
jobs and batches of various sizes (n from 200 to 2,000), cancels some, and every
``--fault-every`` seconds on average does one of: SIGKILL a whole worker (a new one starts a
moment later), SIGKILL a prefork pool process, ``kill -9`` Redis and restart it from its
append-only file, restart Redis gracefully. Then it stops the faults, waits for the backlog to
drain (``--drain-timeout``), and prints what became of every accepted job:

    submitted  accepted (202) requests' jobs; refused: 429 or 503 answers (not accepted)
    succeeded / failed (by error code) / cancelled
    unfinished not terminal at the drain timeout but alive: running with a live heartbeat, or
               queued with its message in the queue (a slow machine, not a loss)
    lost       its record gone, or not terminal at the end with nothing to finish it (running
               without a heartbeat, queued without a message in the queue)
    duplicated ended more than once (the store's count of result writes per job)

The exit status is 1 if any job was lost or duplicated. Run from the repository root.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from bench.fault_cluster import start_fault_cluster
from service.main import create_app
from tests.workers.conftest import WorkerProcess
from tests.workers.redis_server import RedisServer
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource


@dataclass
class Tally:
    accepted: list[str] = field(default_factory=list)
    refused: collections.Counter[int] = field(default_factory=collections.Counter)
    cancels: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)


class Fleet:
    """The worker processes; a killed one is replaced after a short pause."""

    def __init__(self, settings, folder: Path, size: int, rng: random.Random) -> None:
        self.settings = settings
        self.folder = folder
        self.rng = rng
        self.started = 0
        self.workers = [self._start() for _ in range(size)]
        for worker in self.workers:
            worker.wait_ready(timeout=120)

    def _start(self) -> WorkerProcess:
        self.started += 1
        pool = "prefork" if self.started % 2 == 0 else "solo"
        name = f"chaos{self.started}"
        return WorkerProcess(self.settings, name, self.folder / f"{name}.log", pool=pool)

    def kill_worker(self) -> None:
        victim = self.rng.choice(self.workers)
        victim.kill()
        victim.stop()
        self.workers.remove(victim)
        time.sleep(self.rng.uniform(0.5, 2.0))
        self.workers.append(self._start())

    def kill_pool_process(self) -> bool:
        children = [pid for w in self.workers if w.process.poll() is None for pid in w.children()]
        if not children:
            return False
        os.kill(self.rng.choice(children), signal.SIGKILL)
        return True

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def submit(client: TestClient, rng: random.Random, tally: Tally) -> None:
    n = rng.choice([200, 500, 1_000, 2_000])
    options = {"model": SMALL_MODEL_ID, "n": n, "batch_size": 500, "seed": rng.randrange(10**6)}
    try:
        if rng.random() < 0.25:
            images = [{"image": rng_image(rng)} for _ in range(rng.randint(2, 5))]
            response = client.post("/v1/batches", json={**options, "images": images})
            if response.status_code == 202:
                tally.accepted += [item["job_id"] for item in response.json()["items"]]
        else:
            response = client.post("/v1/certify", json={**options, "image": rng_image(rng)})
            if response.status_code == 202:
                tally.accepted.append(response.json()["id"])
    except Exception as error:  # the gateway itself must never fail: report it
        print(f"request raised {type(error).__name__}: {error}", file=sys.stderr)
        tally.refused[0] += 1
        return
    if response.status_code != 202:
        tally.refused[response.status_code] += 1


def rng_image(rng: random.Random) -> list[list[float]]:
    return np.random.default_rng(rng.randrange(10**6)).random((8, 8)).round(4).tolist()


def cancel_one(client: TestClient, rng: random.Random, tally: Tally) -> None:
    if tally.accepted:
        response = client.delete(f"/v1/jobs/{rng.choice(tally.accepted)}")
        tally.cancels += response.status_code == 202


def inject_fault(fleet: Fleet, server: RedisServer, rng: random.Random, tally: Tally) -> None:
    fault = rng.choice(["kill_worker", "kill_pool_process", "kill_redis", "restart_redis"])
    if fault == "kill_worker":
        fleet.kill_worker()
    elif fault == "kill_pool_process":
        if not fleet.kill_pool_process():
            return
    else:
        server.restart(graceful=fault == "restart_redis", down_seconds=rng.uniform(0.5, 3.0))
    tally.faults[fault] += 1


def final_states(client: TestClient, store, job_ids: list[str], timeout: float) -> dict:
    """Each job's record once all are terminal, or as they are at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = dict(zip(job_ids, store.get_jobs(job_ids), strict=True))
        except Exception:  # the store is still coming back
            time.sleep(0.5)
            continue
        pending = [r for r in records.values() if r is not None and not r.status.is_terminal]
        if not pending or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-every", type=float, default=6.0, help="mean seconds")
    parser.add_argument("--submit-every", type=float, default=0.5, help="mean seconds")
    parser.add_argument("--heartbeat-timeout", type=float, default=3.0)
    parser.add_argument("--reaper-interval", type=float, default=1.0)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    folder, server, settings = start_fault_cluster(
        "chaos",
        args,
        fsync=args.fsync,
        task_time_limit_seconds=120,
        broker_visibility_timeout_seconds=600,
    )
    tally = Tally()
    fleet = Fleet(settings, folder, args.workers, rng)
    started = time.monotonic()
    try:
        with TestClient(create_app(settings, SmallModelSource())) as client:
            store = client.app.state.runtime.store
            next_fault = started + rng.expovariate(1 / args.fault_every)
            while time.monotonic() - started < args.duration:
                if time.monotonic() >= next_fault:
                    inject_fault(fleet, server, rng, tally)
                    next_fault = time.monotonic() + rng.expovariate(1 / args.fault_every)
                elif rng.random() < 0.1:
                    cancel_one(client, rng, tally)
                else:
                    submit(client, rng, tally)
                time.sleep(rng.expovariate(1 / args.submit_every))
            faults_over = time.monotonic()
            records = final_states(client, store, tally.accepted, args.drain_timeout)
            drained = time.monotonic() - faults_over
            writes = {job_id: store.result_writes(job_id) for job_id in tally.accepted}
            waiting = [j for j, r in records.items() if r is not None and not r.status.is_terminal]
            holders = dict(zip(waiting, store.heartbeat_holders(waiting), strict=True))
            with_messages = client.app.state.runtime.dispatcher.job_ids_waiting(waiting)
    finally:
        fleet.stop()
        server.stop()
    statuses = collections.Counter(r.status.value for r in records.values() if r is not None)
    errors = collections.Counter(
        r.error.code for r in records.values() if r is not None and r.error is not None
    )
    alive = [j for j in waiting if holders[j] is not None or j in with_messages]
    lost = [j for j, r in records.items() if r is None or (j in waiting and j not in alive)]
    duplicated = [j for j, count in writes.items() if count > 1]
    print(f"duration   {args.duration:.0f} s of faults, drained in {drained:.1f} s")
    print(f"faults     {dict(tally.faults)}")
    print(f"submitted  {len(tally.accepted)} jobs accepted; refused {dict(tally.refused)}")
    print(f"succeeded  {statuses['succeeded']}")
    print(f"failed     {statuses['failed']} {dict(errors)}")
    print(f"cancelled  {statuses['cancelled']} ({tally.cancels} cancels asked)")
    print(f"unfinished {len(alive)} (alive at the drain timeout)")
    print(f"lost       {len(lost)} {lost[:5]}")
    print(f"duplicated {len(duplicated)} {duplicated[:5]}")
    print(f"logs       {folder}")
    return 1 if lost or duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
