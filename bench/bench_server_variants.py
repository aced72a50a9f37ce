"""The embedded service under load with different server settings, alternating in one run.

    python -m bench.bench_server_variants [--rounds 2] [--margin-requests 400]
        [VARIANT ...]   # NAME=HYCAS_SETTING:VALUE[,HYCAS_SETTING:VALUE...]

Each variant is ``hycas serve`` (as in :mod:`bench.bench_batching`: a subprocess on a free
loopback port, 4 jobs per process, this process's torch thread count) with the given
``HYCAS_*`` settings. Per variant and round: 128 concurrent jobs of n = 100 against one direct
``smoothing_certify`` of n = 10,000 timed just before and just after, and margin-only requests
(``?wait=``) from 16 clients with the server's CPU per request. The variants alternate, so a
change of the machine's load falls on all of them. Default variants: the HTTP parser and the
event loop (``h11`` + ``asyncio``, ``httptools`` + ``asyncio``, ``httptools`` + ``uvloop``).
"""

from __future__ import annotations

import os
import time

from bench import bench_batching as served_bench
from bench.common import bench_parser, header, shipped_model
from certify import smoothing_certify

DEFAULT_VARIANTS = (
    "h11+asyncio=HYCAS_HTTP_PARSER:h11,HYCAS_EVENT_LOOP:asyncio",
    "httptools+asyncio=HYCAS_HTTP_PARSER:httptools,HYCAS_EVENT_LOOP:asyncio",
    "httptools+uvloop=HYCAS_HTTP_PARSER:httptools,HYCAS_EVENT_LOOP:uvloop",
)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition("=")
    pairs = (item.split(":", 1) for item in settings.split(",") if item)
    return name, {key: value for key, value in pairs}


def main() -> None:
    parser = bench_parser(__doc__, rounds=2, margin_requests=400)
    parser.add_argument("variants", nargs="*", default=list(DEFAULT_VARIANTS))
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.variants)
    model, card, image = shipped_model("digits-hycas")
    pixels = image[0].tolist()
    jobs = {"model": card.id, "image": pixels, "methods": ["smoothing"], "n0": 100, "n": 100}
    margin = {"model": card.id, "image": pixels, "methods": ["margin"]}
    print(header(card, image, jobs_per_process=4, clients=served_bench.CLIENTS))
    base_environment = served_bench.server_environment

    def direct() -> float:
        started = time.perf_counter()
        smoothing_certify(model, image, sigma=card.sigma, n0=100, n=10_000, seed=0)
        return 10_100 / (time.perf_counter() - started)

    for round_ in range(args.rounds):
        for name, settings in variants.items():

            def environment(jobs_per_process: int, settings=settings) -> dict[str, str]:
                return {**base_environment(jobs_per_process), **settings}

            served_bench.server_environment = environment
            with served_bench.served(4) as (url, server):
                clients = served_bench.Clients(url)
                served_bench.run_jobs(clients, server, jobs, 8)  # warm-up
                before = direct()
                seconds, _, _ = served_bench.run_jobs(clients, server, jobs, 128)
                reference = (before + direct()) / 2
                clients_count = served_bench.CLIENTS
                served_bench.margin_rate(clients, server, margin, 32, clients_count)  # warm-up
                rate, cpu_ms = served_bench.margin_rate(
                    clients, server, margin, args.margin_requests, clients_count
                )
                clients.close()
            samples = 128 * 200 / seconds
            print(
                f"round {round_} {name}: 128 jobs of n=100 {samples / reference:.2f}× direct; "
                f"margin-only {rate:.0f} requests/s, {cpu_ms:.1f} server CPU ms/request "
                f"(load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    served_bench.server_environment = base_environment


if __name__ == "__main__":
    main()
