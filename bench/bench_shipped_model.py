"""The shipped model end to end in the library: forward pass, smoothing and margin certificates.

    python -m bench.bench_shipped_model [--model digits-hycas] [--n 10000] [--repeats 3]

Prints, on the first digits test image and in one run: the forward throughput over the same
n0 + n noisy inputs in batches of 1,000 (noise drawn in advance, fresh Ω per sample), the
seconds and samples/s of ``smoothing_certify`` at the card's σ with their ratio to the forward
pass, and the milliseconds of ``margin_certify`` (median of ``--repeats`` after one warm-up
each).
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.common import bench_parser, header, shipped_model
from certify import margin_certify, smoothing_certify


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = bench_parser(__doc__, model="digits-hycas", n=10_000, n0=100, batch=1000, repeats=3)
    args = parser.parse_args()

    model, card, image = shipped_model(args.model)
    batch = image.expand(args.batch, *image.shape).contiguous()
    print(header(card, image))

    samples = args.n0 + args.n
    noisy = (batch + card.sigma * torch.randn_like(batch)).float()

    def forward() -> None:
        with torch.inference_mode():
            for start in range(0, samples, args.batch):
                model(noisy[: min(args.batch, samples - start)])

    forward_rate = samples / median_seconds(forward, args.repeats)
    smoothing = median_seconds(
        lambda: smoothing_certify(
            model, image, sigma=card.sigma, n0=args.n0, n=args.n, batch_size=args.batch, seed=0
        ),
        args.repeats,
    )
    smoothing_rate = samples / smoothing
    margin = median_seconds(lambda: margin_certify(model, image), args.repeats)
    print(f"forward pass (fresh Ω per sample)  {forward_rate:>10,.0f} samples/s")
    print(
        f"smoothing_certify n0={args.n0} n={args.n:,}  {smoothing:>8.2f} s  "
        f"{smoothing_rate:,.0f} samples/s  ({smoothing_rate / forward_rate:.3f}× forward)"
    )
    print(f"margin_certify (K = 1)             {margin * 1000:>10.1f} ms")


if __name__ == "__main__":
    main()
