"""Cross-request batching on the shipped model, in one run: throughput against one direct call.

    python -m bench.bench_batching [--model digits-hycas] [--repeats 3] [--jobs-per-process 4]

Prints, on the first digits test image (all sides in this process, same thread count):

1. the engine against a plain Cohen-style loop (one noise generator per run, noise drawn per
   batch, the counts copied to the host after every batch), n0 + n = 10,100 at batch 1,000;
2. one direct ``smoothing_certify`` of n = 10,000 (the reference samples/s);
3. the embedded service (the real app, in-process HTTP): 128 concurrent jobs of n = 100 and
   32 of n = 1,000 (n0 = 100 each), submitted by 16 client threads, samples/s from the first
   submission to the last end, against the direct call timed just before and just after;
   with ``--jobs-per-process`` jobs per process (batched) and with 1 (one job at a time,
   nothing to merge: the service before batching);
4. margin-only requests (``?wait=``) from 16 concurrent clients against one client at a time;
5. replay under batching: the fraction of the 128 merged jobs whose counts differ from the
   same job (same seed) run alone.

Medians of ``--repeats`` where repeated. Figures move with the load of the machine; the ratios
compare sides measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import torch
from fastapi.testclient import TestClient

import models
from certify import smoothing_certify
from certify.sampling import model_device
from models.data import load_dataset
from service.core.config import Settings
from service.main import create_app

CLIENTS = 16


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


def service_settings(jobs_per_process: int) -> Settings:
    return Settings(
        redis_url=None,
        worker_jobs_per_process=jobs_per_process,
        max_queued_jobs=100_000,
        max_queued_jobs_per_key=100_000,
        max_wait_seconds=120,
    )


def run_jobs(client: TestClient, request: dict, count: int) -> tuple[float, list[dict]]:
    """Submit ``count`` jobs from 16 client threads; seconds to the last end, and the jobs."""

    def submit(index: int) -> str:
        response = client.post("/v1/certify", json={**request, "seed": 1000 + index})
        assert response.status_code == 202, response.text
        return response.json()["url"]

    with ThreadPoolExecutor(CLIENTS) as pool:
        urls = list(pool.map(submit, range(count)))
    jobs = []
    for url in urls:
        while True:
            job = client.get(url).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        assert job["status"] == "succeeded", job
        jobs.append(job)
    ends = max(datetime.fromisoformat(job["finished_at"]) for job in jobs)
    firsts = min(datetime.fromisoformat(job["created_at"]) for job in jobs)
    return (ends - firsts).total_seconds(), jobs


def margin_rate(client: TestClient, request: dict, clients: int, per_client: int) -> float:
    def one_client(index: int) -> None:
        for k in range(per_client):
            response = client.post(
                "/v1/certify?wait=30", json={**request, "seed": index * 1000 + k}
            )
            assert response.status_code == 200, response.text

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    return clients * per_client / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-hycas")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs-per-process", type=int, default=4)
    parser.add_argument("--margin-requests", type=int, default=400)
    args = parser.parse_args()

    model, card = models.load(args.model)
    image = load_dataset(card.dataset.name, split="test").images[0]
    sigma = card.sigma
    print(
        f"model={card.id} v{card.version} input={tuple(image.shape)} sigma={sigma} "
        f"threads={torch.get_num_threads()} torch={torch.__version__} "
        f"jobs_per_process={args.jobs_per_process}"
    )

    engine, plain = engine_against_plain_loop(model, image, sigma, args.repeats)
    print(
        f"1. engine {engine:,.0f} samples/s, plain Cohen loop {plain:,.0f}: {engine / plain:.2f}×"
    )

    def direct_rate() -> float:
        return 10_100 / timed(
            lambda: smoothing_certify(
                model, image, sigma=sigma, n0=100, n=10_000, batch_size=1000, seed=0
            )
        )

    direct = statistics.median(direct_rate() for _ in range(args.repeats))
    print(f"2. direct smoothing_certify n=10,000: {direct:,.0f} samples/s")

    pixels = image[0].tolist()
    base = {"model": card.id, "image": pixels, "methods": ["smoothing"], "n0": 100}
    merged_jobs: list[dict] = []
    for jobs_per_process in (args.jobs_per_process, 1):
        with TestClient(create_app(service_settings(jobs_per_process))) as client:
            run_jobs(client, {**base, "n": 100}, 8)  # warm-up
            for count, n in ((128, 100), (32, 1_000)):
                before = direct_rate()
                seconds, jobs = run_jobs(client, {**base, "n": n}, count)
                reference = (before + direct_rate()) / 2  # direct, just before and just after
                rate = count * (100 + n) / seconds
                print(
                    f"3. {jobs_per_process} job(s)/process, {count} jobs of n={n:,}: "
                    f"{rate:,.0f} samples/s = {rate / reference:.2f}× direct "
                    f"({reference:,.0f} samples/s around it)"
                )
                if jobs_per_process > 1 and n == 100:
                    merged_jobs = jobs
            margin_request = {"model": card.id, "image": pixels, "methods": ["margin"]}
            concurrent = margin_rate(client, margin_request, CLIENTS, args.margin_requests // 16)
            single = margin_rate(client, margin_request, 1, args.margin_requests // 8)
            print(
                f"4. {jobs_per_process} job(s)/process, margin-only: {concurrent:,.0f} requests/s "
                f"from {CLIENTS} clients, {single:,.0f} one at a time ({concurrent / single:.1f}×)"
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
