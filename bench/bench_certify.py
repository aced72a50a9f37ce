"""Certification throughput and memory: the streaming engine against the raw forward pass and ART.

    python -m bench.bench_certify [--shape 3,32,32] [--n 10000] [--batch 1000] [--repeats 3]
                                  [--model cnn|hycas] [--points 16] [--max-samples 100000]

Prints, for one model and one input:
1. raw forward throughput at the batch size (noisy batch prepared in advance) against
   ``smoothing_certify`` throughput (noise drawn, votes counted), and their ratio;
2. time and peak RSS growth of ``smoothing_certify`` and of IBM ART's
   ``PyTorchRandomizedSmoothing.certify`` on the same certification, each in a fresh
   interpreter so that the peak belongs to that run alone;
3. samples to a decision of ``certify_at_radius`` against fixed-n CERTIFY, on a spread of
   points of a linear classifier over the same input shape whose true distance is known.
Run from the repository root (``-m`` puts it on the import path for ``tests.certify``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from certify import RadiusDecision, certify_at_radius, is_stochastic, smoothing_certify
from tests.certify.classifiers import LinearBinaryClassifier

NUM_CLASSES = 10
REPOSITORY = Path(__file__).resolve().parents[1]


def benchmark_model(kind: str, shape: tuple[int, int, int]) -> torch.nn.Module:
    """A seeded model in eval mode: a small CNN, or HyCAS from ``models`` (stochastic)."""
    torch.manual_seed(0)
    if kind == "hycas":
        from models import build_hycas

        return build_hycas(shape, num_classes=NUM_CLASSES).eval()
    channels = shape[0]
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, NUM_CLASSES),
    ).eval()


def benchmark_input(shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(1))


def forward_seconds(model, image, *, sigma, samples, batch) -> float:
    """Seconds for the model alone to classify ``samples`` noisy inputs, batch by batch."""
    noisy = image + sigma * torch.randn((batch, *image.shape))
    with torch.inference_mode():
        start = time.perf_counter()
        done = 0
        while done < samples:
            size = min(batch, samples - done)
            model(noisy[:size]).argmax(dim=1)
            done += size
        return time.perf_counter() - start


class TimedModel(torch.nn.Module):
    """Wraps a model and adds up the seconds spent inside its forward pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.stochastic = is_stochastic(model)
        self.seconds = 0.0

    def forward(self, x: torch.Tensor, **omega: object) -> torch.Tensor:
        start = time.perf_counter()
        logits = self.model(x, **omega)
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)
        self.seconds += time.perf_counter() - start
        return logits


def certify_options(args) -> dict:
    """What every ``smoothing_certify`` run of this benchmark is given: σ, n0, alpha and the
    batch size."""
    return {"sigma": args.sigma, "n0": args.n0, "alpha": args.alpha, "batch_size": args.batch}


def throughput_rows(args, model, image) -> None:
    samples = args.n0 + args.n
    forward_rates, certify_rates, inside_model = [], [], []
    forward_seconds(model, image, sigma=args.sigma, samples=args.batch, batch=args.batch)
    for repeat in range(args.repeats):
        seconds = forward_seconds(model, image, sigma=args.sigma, samples=samples, batch=args.batch)
        forward_rates.append(samples / seconds)
        timed = TimedModel(model)
        start = time.perf_counter()
        smoothing_certify(timed, image, n=args.n, seed=repeat, **certify_options(args))
        seconds = time.perf_counter() - start
        certify_rates.append(samples / seconds)
        inside_model.append(timed.seconds / seconds)
    print(f"\n1. throughput, {samples:,} samples a run, {args.repeats} interleaved runs")
    print(f"   {'':<42} {'median':>10} {'best':>10}")
    for name, rates in (
        ("raw forward (noise prepared in advance)", forward_rates),
        ("smoothing_certify", certify_rates),
    ):
        print(f"   {name:<42} {statistics.median(rates):>10,.0f} {max(rates):>10,.0f} samples/s")
    median_ratio = statistics.median(certify_rates) / statistics.median(forward_rates)
    best_ratio = max(certify_rates) / max(forward_rates)
    print(f"   {'ratio certify / forward':<42} {median_ratio:>10.3f} {best_ratio:>10.3f}")
    print(
        f"   {'share of certify time inside the model':<42} "
        f"{statistics.median(inside_model):>10.3f} {max(inside_model):>10.3f}"
    )


def measure_in_child(args, engine: str) -> dict:
    """One certification in a fresh interpreter: seconds, peak RSS growth, label, radius."""
    command = [
        sys.executable,
        "-m",
        "bench.bench_certify",
        "--child",
        engine,
        "--shape",
        args.shape,
        "--n",
        str(args.n),
        "--n0",
        str(args.n0),
        "--batch",
        str(args.batch),
        "--sigma",
        str(args.sigma),
        "--alpha",
        str(args.alpha),
        "--model",
        args.model,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPOSITORY)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def art_certifier(args, model, image, shape):
    """IBM ART's randomized smoothing on the same model, noise level and confidence."""
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    smoother = PyTorchRandomizedSmoothing(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=NUM_CLASSES,
        device_type="cpu",
        sample_size=args.n0,
        scale=args.sigma,
        alpha=args.alpha,
    )
    batch = image.numpy()[None]

    def certify(n):
        labels, radii = smoother.certify(batch, n=n, batch_size=args.batch)
        label = int(labels[0])
        return (None if label < 0 else label), float(radii[0])

    return certify


def reset_peak_rss() -> None:
    """Set the kernel's peak RSS (VmHWM) to the current RSS, so earlier peaks do not count."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss() -> int:
    """Peak resident set size in bytes since the last :func:`reset_peak_rss` (Linux)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def run_child(args, shape) -> None:
    """Child mode: warm up, then run once and print seconds and peak RSS growth as JSON."""
    model, image = benchmark_model(args.model, shape), benchmark_input(shape)
    if args.child == "art":
        run = art_certifier(args, model, image, shape)
    elif args.child == "forward":

        def run(n):
            forward_seconds(model, image, sigma=args.sigma, samples=args.n0 + n, batch=args.batch)
            return None, None
    else:

        def run(n):
            result = smoothing_certify(model, image, n=n, seed=0, **certify_options(args))
            return result.label, result.radius

    run(args.batch)
    reset_peak_rss()
    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    label, radius = run(args.n)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    row = {"seconds": seconds, "peak_growth": peak - baseline, "label": label, "radius": radius}
    print(json.dumps(row))


def engine_rows(args) -> None:
    samples = args.n0 + args.n
    print(f"\n2. one certification (n0={args.n0}, n={args.n:,}), each in a fresh interpreter")
    print(
        f"   {'engine':<40} {'seconds':>8} {'samples/s':>10} {'peak RSS growth':>16} "
        f"{'label':>6} {'radius':>8}"
    )
    for name, engine in (
        ("raw forward only (same batches)", "forward"),
        ("certify.smoothing_certify", "certify"),
        ("ART PyTorchRandomizedSmoothing.certify", "art"),
    ):
        row = measure_in_child(args, engine)
        label = "-" if engine == "forward" else "abst." if row["label"] is None else row["label"]
        radius = "-" if row["radius"] is None else f"{row['radius']:.4f}"
        print(
            f"   {name:<40} {row['seconds']:>8.2f} {samples / row['seconds']:>10,.0f} "
            f"{row['peak_growth'] / 2**20:>12.1f} MiB {label:>6} {radius:>8}"
        )
    materialized = samples * math.prod(int(v) for v in args.shape.split(",")) * 4
    print(f"   (n0 + n float32 noisy copies would take {materialized / 2**20:,.1f} MiB)")


def sequential_rows(args, shape) -> None:
    image = benchmark_input(shape)
    radius = args.sigma
    print(
        f"\n3. certify_at_radius vs fixed-n CERTIFY on a linear classifier over {shape}: "
        f"target radius {radius} (= σ), max_samples = n = {args.max_samples:,}"
    )
    print(f"   {'d/σ':>5} {'decision':>14} {'samples':>8} {'fixed-n radius':>15} {'agree':>6}")
    used = []
    decided, agreements = 0, 0
    for index, fraction in enumerate(torch.linspace(0.0, 3.0, args.points).tolist()):
        model = LinearBinaryClassifier.through_point(
            image, fraction * args.sigma, torch.Generator().manual_seed(index)
        )
        # Both sides see the same noise level, level, sample budget, batches and seed.
        same = {"sigma": args.sigma, "alpha": args.alpha, "batch_size": 10_000, "seed": index}
        test = certify_at_radius(model, image, radius, max_samples=args.max_samples, **same)
        fixed = smoothing_certify(model, image, n=args.max_samples, **same)
        fixed_certified = not fixed.abstained and fixed.radius >= radius
        agree = "-"
        if test.decision != RadiusDecision.UNDECIDED:
            decided += 1
            agrees = (test.decision == RadiusDecision.CERTIFIED) == fixed_certified
            agreements += agrees
            agree = "yes" if agrees else "NO"
        used.append(test.samples)
        print(
            f"   {fraction:>5.2f} {test.decision.value:>14} {test.samples:>8,} "
            f"{fixed.radius / args.sigma:>13.3f} σ {agree:>6}"
        )
    fixed_samples = args.n0 + args.max_samples
    median = statistics.median(used)
    print(
        f"   median samples to a decision {median:,.0f} vs fixed {fixed_samples:,} "
        f"({fixed_samples / median:,.0f}x fewer); mean {statistics.mean(used):,.0f}"
    )
    print(f"   decided on {decided}/{len(used)} points, agreeing with fixed n on {agreements}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="3,32,32")
    parser.add_argument("--model", choices=("cnn", "hycas"), default="cnn")
    parser.add_argument("--n", type=int, default=10_000, help="estimation samples (CERTIFY n)")
    parser.add_argument("--n0", type=int, default=100, help="selection samples (CERTIFY n0)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=16, help="points for the sequential test")
    parser.add_argument("--max-samples", type=int, default=100_000)
    parser.add_argument("--child", choices=("forward", "certify", "art"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    if args.child:
        run_child(args, shape)
        return

    model, image = benchmark_model(args.model, shape), benchmark_input(shape)
    print(
        f"model={args.model} shape={shape} batch={args.batch} sigma={args.sigma} "
        f"alpha={args.alpha} threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    throughput_rows(args, model, image)
    engine_rows(args)
    sequential_rows(args, shape)


if __name__ == "__main__":
    main()
