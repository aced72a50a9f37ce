"""Forward throughput of HyCAS on CPU (or CUDA when present), in samples per second.

    python bench/bench_forward.py [--shape 1,28,28] [--batch 1000] [--repeats 5]

Prints, for the same input batch: HyCAS with a fresh Ω per sample (the stochastic
classifier certified by smoothing), HyCAS with a frozen Ω (the margin classifier), and the
same network with its Ω-noise switched off, so the cost of drawing Ω reads as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models import build_hycas


def throughput(fn, batch: int, repeats: int, sync) -> tuple[float, float]:
    """Median and best samples/s over ``repeats`` timed calls after one warm-up call."""
    fn()
    sync()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        rates.append(batch / (time.perf_counter() - start))
    return statistics.median(rates), max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1,28,28")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    model = build_hycas(shape, num_classes=10).to(device).eval()
    quiet = (
        build_hycas(shape, num_classes=10, attention_temperature=0.0, attention_noise_std=0.0)
        .to(device)
        .eval()
    )
    x = torch.rand(args.batch, *shape, device=device)
    print(f"device={device} threads={torch.get_num_threads()} shape={shape} batch={args.batch}")
    print(f"lipschitz_bound={model.lipschitz_bound():.6f}")
    with torch.inference_mode():
        rows = {
            "hycas, fresh Ω per sample": throughput(
                lambda: model(x), args.batch, args.repeats, sync
            ),
            "hycas, frozen Ω": throughput(
                lambda: model(x, omega_seed=0), args.batch, args.repeats, sync
            ),
            "same network, Ω-noise off": throughput(
                lambda: quiet(x), args.batch, args.repeats, sync
            ),
        }
    base = rows["same network, Ω-noise off"][0]
    print(f"{'variant':<30} {'median samples/s':>18} {'best':>10} {'vs noise-off':>13}")
    for name, (median, best) in rows.items():
        print(f"{name:<30} {median:>18,.0f} {best:>10,.0f} {median / base:>12.2f}x")


if __name__ == "__main__":
    main()
