"""The shipped model end to end in the library: forward pass, smoothing and margin certificates.

    python bench/bench_shipped_model.py [--model digits-hycas] [--n 10000] [--repeats 3]

Prints, on the first digits test image and in one run: the forward throughput over the same
n0 + n noisy inputs in batches of 1,000 (noise drawn in advance, fresh Ω per sample), the
seconds and samples/s of ``smoothing_certify`` at the card's σ with their ratio to the forward
pass, and the milliseconds of ``margin_certify`` (median of ``--repeats`` after one warm-up
each).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import models
from certify import margin_certify, smoothing_certify
from models.data import load_dataset


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-hycas")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model, card = models.load(args.model)
    image = load_dataset(card.dataset.name, split="test").images[0]
    batch = image.expand(args.batch, *image.shape).contiguous()
    print(
        f"model={card.id} v{card.version} input={tuple(image.shape)} sigma={card.sigma} "
        f"threads={torch.get_num_threads()} torch={torch.__version__}"
    )

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
