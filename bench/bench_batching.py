"""Cross-request batching on the shipped model, in one run: throughput against one direct call.

    python -m bench.bench_batching [--model digits-hycas] [--repeats 3] [--jobs-per-process 4]

Prints, on the first digits test image (the direct calls in this process, the service in a
subprocess, both at this process's torch thread count):

1. the engine against a plain Cohen-style loop (one noise generator per run, noise drawn per
   batch, the counts copied to the host after every batch), n0 + n = 10,100 at batch 1,000;
2. one direct ``smoothing_certify`` of n = 10,000 (the reference samples/s);
3. the embedded service as a clinical pipeline sees it: ``hycas serve`` in a subprocess on a
   free loopback port (embedded mode, the same torch thread count), driven over HTTP from this
   process (``httpx``, one keep-alive connection per client thread): 128 concurrent jobs of
   n = 100 and 32 of n = 1,000 (n0 = 100 each), submitted by 16 client threads, samples/s from
   the first submission to the last end (the server's timestamps), against the direct call
   timed in this process (the server idle) just before and just after; with
   ``--jobs-per-process`` jobs per process (batched) and with 1 (one job at a time, nothing to
   merge: the service before batching), both in the same run; and, robust to the load of a
   shared machine, the samples per CPU second of the server (all its threads) against those
   of the direct call (this process, ``time.process_time``);
4. margin-only requests (``?wait=``) from 16 concurrent clients against one client at a time,
   with the server's CPU milliseconds per request (all its threads) and those of a direct
   ``margin_certify`` in this process;
5. replay under batching: the fraction of the 128 merged jobs whose counts differ from the
   same job (same seed) run alone.

Medians of ``--repeats`` where repeated. Figures move with the load of the machine; the ratios
compare sides measured in the same run. The server runs one event-loop thread, the embedded
pool's job threads (``--jobs-per-process``), one batcher thread per model, Starlette's thread
pool for submissions, and torch's intra-op threads (the bench's count); this process runs 16
client threads and, between the service's measurements, the direct calls.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

import httpx
import psutil
import torch

from bench.common import bench_parser, header, shipped_model
from certify import margin_certify, smoothing_certify
from certify.sampling import model_device

CLIENTS = 16
MARGIN_DIRECT_CALLS = 50
SERVER_START_SECONDS = 120.0


def plain_cohen_counts(model, image: torch.Tensor, sigma: float, samples: int, batch: int, seed):
    """Cohen et al.'s sampling loop as commonly written: noise per batch from one generator,
    argmax, counts accumulated on the host after each batch."""
    device = model_device(model)
    noise = torch.Generator(device=device).manual_seed(seed)
    omega = torch.Generator(device=device).manual_seed(seed + 1)
    x = image.to(device).unsqueeze(0)
    counts = torch.zeros(10, dtype=torch.int64)
    with torch.inference_mode():
        for start in range(0, samples, batch):
            size = min(batch, samples - start)
            noisy = x.repeat(size, 1, 1, 1)
            noisy += sigma * torch.randn(noisy.shape, generator=noise, device=device)
            labels = model(noisy, generator=omega).argmax(1)
            counts += torch.bincount(labels, minlength=10).cpu()
    return counts


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def engine_against_plain_loop(model, image, sigma, repeats: int) -> tuple[float, float]:
    samples = 10_100
    engine, plain = [], []
    for seed in range(repeats + 1):
        e = timed(
            lambda seed=seed: smoothing_certify(
                model, image, sigma=sigma, n0=100, n=10_000, batch_size=1000, seed=seed
            )
        )
        p = timed(lambda seed=seed: plain_cohen_counts(model, image, sigma, samples, 1000, seed))
        if seed:  # the first round warms up
            engine.append(samples / e)
            plain.append(samples / p)
    return statistics.median(engine), statistics.median(plain)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_environment(jobs_per_process: int) -> dict[str, str]:
    """The environment of ``hycas serve``: embedded mode, ``jobs_per_process`` job threads,
    room for every job of the bench, torch at this process's thread count, warnings only."""
    kept = ("HYCAS_MODEL_REPOSITORY", "HYCAS_MODEL_CACHE_DIR", "HYCAS_DEVICE")
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("HYCAS_") or name in kept
    }
    environment.update(
        HYCAS_WORKER_JOBS_PER_PROCESS=str(jobs_per_process),
        HYCAS_MAX_QUEUED_JOBS="100000",
        HYCAS_MAX_QUEUED_JOBS_PER_KEY="100000",
        HYCAS_MAX_WAIT_SECONDS="120",
        HYCAS_LOG_LEVEL="WARNING",
        OMP_NUM_THREADS=str(torch.get_num_threads()),
    )
    return environment


@contextmanager
def served(jobs_per_process: int) -> Iterator[tuple[str, psutil.Process]]:
    """``hycas serve`` in a subprocess on a free loopback port: its base URL and process."""
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        env=server_environment(jobs_per_process),
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"hycas serve exited with status {server.returncode}")
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, psutil.Process(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class Clients:
    """HTTP clients of the server, one keep-alive connection per calling thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[httpx.Client] = []

    def get(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.url, timeout=300)
            self._all.append(client)
        return client

    def close(self) -> None:
        for client in self._all:
            client.close()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def run_jobs(
    clients: Clients, server: psutil.Process, request: dict, count: int
) -> tuple[float, float, list[dict]]:
    """Submit ``count`` jobs from 16 client threads; seconds from the first submission to the
    last end, the server's CPU seconds meanwhile, and the jobs."""

    def submit(index: int) -> str:
        response = clients.get().post("/v1/certify", json={**request, "seed": 1000 + index})
        assert response.status_code == 202, response.text
        return response.json()["url"]

    cpu = cpu_seconds(server)
    with ThreadPoolExecutor(CLIENTS) as pool:
        urls = list(pool.map(submit, range(count)))
    jobs = []
    for url in urls:
        while True:
            job = clients.get().get(url).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        assert job["status"] == "succeeded", job
        jobs.append(job)
    cpu = cpu_seconds(server) - cpu
    ends = max(datetime.fromisoformat(job["finished_at"]) for job in jobs)
    firsts = min(datetime.fromisoformat(job["created_at"]) for job in jobs)
    return (ends - firsts).total_seconds(), cpu, jobs


def margin_rate(
    clients: Clients, server: psutil.Process, request: dict, count: int, concurrency: int
) -> tuple[float, float]:
    """``count`` margin-only requests from ``concurrency`` client threads: requests/s, and the
    server's CPU milliseconds per request."""

    def one(index: int) -> None:
        response = clients.get().post("/v1/certify?wait=30", json={**request, "seed": index})
        assert response.status_code == 200, response.text

    cpu = cpu_seconds(server)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    seconds = time.perf_counter() - start
    return count / seconds, 1000 * (cpu_seconds(server) - cpu) / count


def main() -> None:
    parser = bench_parser(
        __doc__, model="digits-hycas", repeats=3, jobs_per_process=4, margin_requests=400
    )
    args = parser.parse_args()

    model, card, image = shipped_model(args.model)
    sigma = card.sigma
    print(header(card, image, jobs_per_process=args.jobs_per_process, clients=CLIENTS))
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    engine, plain = engine_against_plain_loop(model, image, sigma, args.repeats)
    print(
        f"1. engine {engine:,.0f} samples/s, plain Cohen loop {plain:,.0f}: {engine / plain:.2f}×"
    )

    def direct_run() -> tuple[float, float]:
        """Samples per second and per CPU second (this process) of one direct call."""
        wall, cpu = time.perf_counter(), time.process_time()
        smoothing_certify(model, image, sigma=sigma, n0=100, n=10_000, batch_size=1000, seed=0)
        return 10_100 / (time.perf_counter() - wall), 10_100 / (time.process_time() - cpu)

    direct = statistics.median(direct_run()[0] for _ in range(args.repeats))
    print(f"2. direct smoothing_certify n=10,000: {direct:,.0f} samples/s")

    pixels = image[0].tolist()
    base = {"model": card.id, "image": pixels, "methods": ["smoothing"], "n0": 100}
    margin_request = {"model": card.id, "image": pixels, "methods": ["margin"]}
    merged_jobs: list[dict] = []
    for jobs_per_process in (args.jobs_per_process, 1):
        with served(jobs_per_process) as (url, server):
            clients = Clients(url)
            run_jobs(clients, server, {**base, "n": 100}, 8)  # warm-up
            for count, n in ((128, 100), (32, 1_000)):
                before = direct_run()
                seconds, cpu, jobs = run_jobs(clients, server, {**base, "n": n}, count)
                after = direct_run()  # the reference: direct, just before and just after
                reference, cpu_reference = ((b + a) / 2 for b, a in zip(before, after, strict=True))
                rate, cpu_rate = count * (100 + n) / seconds, count * (100 + n) / cpu
                print(
                    f"3. {jobs_per_process} job(s)/process, {count} jobs of n={n:,}: "
                    f"{rate:,.0f} samples/s = {rate / reference:.2f}× direct "
                    f"({reference:,.0f} samples/s around it); per CPU second "
                    f"{cpu_rate:,.0f} samples (server) = {cpu_rate / cpu_reference:.2f}× direct"
                )
                if jobs_per_process > 1 and n == 100:
                    merged_jobs = jobs
            margin_rate(clients, server, margin_request, CLIENTS, CLIENTS)  # warm-up
            concurrent, concurrent_cpu = margin_rate(
                clients, server, margin_request, args.margin_requests, CLIENTS
            )
            single, single_cpu = margin_rate(
                clients, server, margin_request, args.margin_requests // 8, 1
            )
            clients.close()
            start = time.process_time()
            for seed in range(MARGIN_DIRECT_CALLS):
                margin_certify(model, image, seed=seed)
            direct_cpu = 1000 * (time.process_time() - start) / MARGIN_DIRECT_CALLS
            print(
                f"4. {jobs_per_process} job(s)/process, margin-only: {concurrent:,.0f} requests/s "
                f"from {CLIENTS} clients ({concurrent_cpu:.1f} server CPU ms/request), "
                f"{single:,.0f} one at a time ({single_cpu:.1f} ms/request; "
                f"{concurrent / single:.1f}×); a direct margin_certify: {direct_cpu:.1f} CPU ms"
            )

    differ = 0
    for job in merged_jobs:
        certificate = job["result"]["certificates"]["smoothing"]["details"]
        alone = smoothing_certify(
            model,
            image,
            sigma=sigma,
            n0=100,
            n=100,
            batch_size=certificate["batch_size"],
            seed=int(certificate["seed"]),
        )
        differ += list(alone.counts) != certificate["counts"]
    print(
        f"5. replay: {differ} of {len(merged_jobs)} merged jobs have counts that differ from the "
        f"same seed alone ({differ / max(1, len(merged_jobs)):.1%})"
    )


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
