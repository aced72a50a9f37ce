"""The fixed CPU cost of a job: the service's job path against a direct certificate call.

    python -m bench.profile_job_cost [--model digits-hycas] [--jobs 100] [--top 25]

On the first digits test image, in one process (same thread count on every side):

a. ``--jobs`` sequential smoothing jobs of n0 = n = 100 through the embedded service's job
   path (``JobService.submit``: decoding, parameters, the store, the embedded pool's job
   thread, the runner, its forward batcher, the stored result), each waited for before the
   next, against as many direct ``smoothing_certify`` calls of n0 = n = 100;
b. ``--jobs`` sequential margin-only requests through the embedded HTTP app (in-process
   client, ``POST /v1/certify?wait=30``) against as many direct ``margin_certify`` calls.

Prints the CPU milliseconds per job of each side (``time.process_time``: all threads of the
process, meaningful on a loaded machine where wall time is not), their difference and ratio,
then the top entries of a cProfile of each service side, every thread of the process profiled
(cumulative time, then own time). The blocking waits (``SimpleQueue.get``, ``lock.acquire``,
``epoll.poll``) come out of these profiles with large times that are not CPU (the process's
CPU time above is far smaller): read past them.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack

from fastapi.testclient import TestClient

from bench.common import bench_parser, header, shipped_model
from certify import margin_certify, smoothing_certify
from service.core.config import Settings
from service.job_inputs import ImageUpload
from service.main import create_app
from service.runtime import create_runtime
from service.schemas import CertifyOptions


class AllThreadsProfile:
    """A cProfile profile of this thread and of every thread started after ``start``, each
    timed by its own CPU clock (``time.thread_time``); ``clear`` forgets what was recorded."""

    def __init__(self) -> None:
        self._profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _hook(self, *_args: object) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self._profiles.append(profile)
        profile.enable()

    def start(self) -> None:
        threading.setprofile(self._hook)
        main = cProfile.Profile(time.thread_time)
        self._profiles.append(main)
        main.enable()

    def clear(self) -> None:
        with self._lock:
            for profile in self._profiles:
                profile.clear()

    def stop(self) -> pstats.Stats:
        threading.setprofile(None)  # type: ignore[arg-type]
        self._profiles[0].disable()
        out = io.StringIO()
        stats = pstats.Stats(self._profiles[0], stream=out)
        for profile in self._profiles[1:]:
            profile.create_stats()
            if profile.stats:  # type: ignore[attr-defined]  # a thread that ran nothing: none
                stats.add(profile)
        return stats


def cpu_ms_per_call(fn: Callable[[int], None], calls: int) -> float:
    start = time.process_time()
    for index in range(calls):
        fn(index)
    return 1000 * (time.process_time() - start) / calls


def print_top(title: str, stats: pstats.Stats, top: int) -> None:
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats(key).print_stats(top)
        lines = out.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        print(f"\n--- {title}: top {top} by {key} ---")
        print("\n".join(lines[start : start + top + 1]))


def settings() -> Settings:
    return Settings(
        redis_url=None,
        worker_jobs_per_process=1,
        worker_pool_size=1,
        max_queued_jobs=100_000,
        max_queued_jobs_per_key=100_000,
    )


WARM_UP_CALLS = 5


def profiled(make_call: Callable[[ExitStack], Callable[[int], None]], calls: int) -> pstats.Stats:
    """A profile of ``calls`` calls of what ``make_call`` returns, after a warm-up; the call is
    made with the profile on, so the threads its service starts are profiled too."""
    profile = AllThreadsProfile()
    profile.start()
    with ExitStack() as stack:
        one_call = make_call(stack)
        for index in range(WARM_UP_CALLS):
            one_call(index)
        profile.clear()
        for index in range(calls):
            one_call(index)
        return profile.stop()


def main() -> None:
    args = bench_parser(__doc__, model="digits-hycas", jobs=100, top=25).parse_args()
    model, card, image = shipped_model(args.model)
    pixels = image[0].tolist()
    sigma = card.sigma
    print(header(card, image, jobs=args.jobs))

    # a. The job path. One job thread: a marker queued behind a job runs once it has ended.
    options = CertifyOptions(methods=("smoothing",), n0=100, n=100)

    def job_path(stack: ExitStack) -> Callable[[int], None]:
        runtime = create_runtime(settings())
        stack.callback(runtime.close)
        pool = runtime.dispatcher._pool  # type: ignore[attr-defined]

        def one_job(index: int) -> None:
            upload = ImageUpload(data=None, array=pixels, filename=None)
            seeded = options.model_copy(update={"seed": 1000 + index})
            job = runtime.jobs.submit(card.id, seeded, upload, None)
            pool.submit(lambda: None).result()
            stored = runtime.store.get_job(job.id)
            assert stored is not None and stored.status.value == "succeeded", stored

        return one_job

    batch_size = settings().default_batch_size

    def one_direct(index: int) -> None:
        smoothing_certify(
            model, image, sigma=sigma, n0=100, n=100, batch_size=batch_size, seed=1000 + index
        )

    # b. Margin-only requests through the HTTP app, in-process.
    request = {"model": card.id, "image": pixels, "methods": ["margin"]}

    def http_path(stack: ExitStack) -> Callable[[int], None]:
        client = stack.enter_context(TestClient(create_app(settings())))

        def one_request(index: int) -> None:
            response = client.post("/v1/certify?wait=30", json={**request, "seed": index})
            assert response.status_code == 200, response.text

        return one_request

    def one_margin(index: int) -> None:
        margin_certify(model, image, seed=index)

    sides = (
        (
            "a. smoothing n0=n=100: job path",
            job_path,
            "CPU ms/job, direct smoothing_certify",
            one_direct,
        ),
        (
            "b. margin-only: HTTP request",
            http_path,
            "CPU ms/request (in-process client included), direct margin_certify",
            one_margin,
        ),
    )
    for title, make_call, what, direct_call in sides:
        with ExitStack() as stack:
            service_call = make_call(stack)
            for index in range(WARM_UP_CALLS):
                service_call(index)
                direct_call(index)
            direct = cpu_ms_per_call(direct_call, args.jobs)
            service = cpu_ms_per_call(service_call, args.jobs)
        print(
            f"{title} {service:.2f} {what} {direct:.2f} CPU ms/call: "
            f"+{service - direct:.2f} ms, {service / direct:.2f}×"
        )

    # The profiles: a fresh runtime and app, so that all their threads are profiled.
    job_stats = profiled(job_path, args.jobs)
    request_stats = profiled(http_path, args.jobs)
    print_top("a. job path", job_stats, args.top)
    print_top("b. margin-only HTTP requests", request_stats, args.top)


if __name__ == "__main__":
    main()
