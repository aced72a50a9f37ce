"""Merged jobs on an accelerator against the raw forward pass at its best batch size.

    python bench/bench_gpu_batching.py [--device cuda] [--jobs 64] [--seconds 3]
        [--models digits-hycas hycas:1,28,28 hycas:3,32,32 hycas:3,224,224]

For each model, in one process, in IEEE float32 (TensorFloat-32 off, as certification runs):

1. the raw forward pass of the smoothing classifier (a fresh Ω per sample, inference mode,
   the batch already on the device) at batch sizes 64, 256, 1,024, … up to the first whose
   call takes over ``--max-call-seconds`` or that does not fit: samples/s at each, and the best;
2. the cost of one call at batch 1 (nothing but the kernels' launch and the Python around
   them): the most that capturing the forward pass (CUDA graphs, ``torch.compile``'s
   reduce-overhead mode) could save at the best batch size is that call's share of a call at
   the best batch size;
3. one direct ``smoothing_certify`` at ``batch_size`` = the best batch size, ``n`` sized to
   take about ``--seconds``: samples/s alone;
4. ``--jobs`` concurrent jobs (one thread each, as the worker's job threads run them), each a
   ``smoothing_certify`` of ``n`` = ``--job-n`` (the service's default, 10,000; fewer where
   the run would pass ``--max-seconds``) with its own noise and Ω seeds, in batches of
   ``--job-batch`` samples, through one :class:`workers.batching.ForwardBatcher` whose
   ``max_batch`` is the best batch size (5 ms delay, the service's default): samples/s from
   the first start to the last end, the mean merged batch, the merged rate against the raw
   forward pass, and where the time went: the device's time in the merged forward passes
   (CUDA events) against the wall clock, and their samples per device second against the
   raw forward pass's;
5. the GPU's utilisation (NVML, sampled every 20 ms) over the direct run and the merged run.

``digits-hycas`` is the shipped package; ``hycas:C,H,W`` an untrained default HyCAS of that
input shape (random weights cost what trained ones cost). ``n0`` is 100 for every job.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

import models
from certify import smoothing_certify
from models import build_hycas
from workers.batching import BatchRecord, ForwardBatcher

SIGMA = 0.25


class Utilisation:
    """The device's utilisation (%), sampled by NVML in a thread while the block runs."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[int] = []
        self._handle = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception as error:  # no NVML: the figure reads n/a
            print(f"  (no GPU utilisation: {error})")

    def __enter__(self) -> Utilisation:
        self.samples.clear()
        self._stop = threading.Event()
        if self._handle is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    def text(self) -> str:
        if not self.samples:
            return "n/a"
        return f"{sum(self.samples) / len(self.samples):.0f} %"


def build(spec: str, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model of ``spec`` on ``device`` and an input image for it (on the CPU)."""
    if spec.startswith("hycas:"):
        shape = tuple(int(v) for v in spec.split(":", 1)[1].split(","))
        torch.manual_seed(0)
        model = build_hycas(shape, 10).eval().to(device)
        image = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        return model, image
    from models.data import load_dataset

    model, card = models.load(spec, device=device)
    return model, load_dataset(card.dataset.name, split="test").images[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_rate(model, image, batch: int, device, max_seconds: float) -> tuple[float, float]:
    """Samples/s of the raw forward pass at ``batch`` (best of the timed calls) and the
    seconds of one call."""
    x = image.to(device).expand(batch, *image.shape).contiguous()
    x = x + SIGMA * torch.randn_like(x)
    with torch.inference_mode():
        model(x)  # warm-up: kernels chosen, memory taken
        sync(device)
        times = []
        started = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - started < 0.5 and len(times) < 50):
            t = time.perf_counter()
            model(x)
            sync(device)
            times.append(time.perf_counter() - t)
            if times[-1] > max_seconds:
                break
    best = min(times)
    return batch / best, best


def sweep(model, image, device, max_seconds: float) -> dict[int, tuple[float, float]]:
    rates: dict[int, tuple[float, float]] = {}
    batch = 64
    while True:
        try:
            rates[batch] = forward_rate(model, image, batch, device, max_seconds)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        if rates[batch][1] > max_seconds or batch >= 262_144:
            break
        batch *= 4
    return rates


class ForwardTimes:
    """The host's and (on CUDA) the device's seconds in the model's forward passes while the
    block runs (the instance's ``forward`` wrapped, restored after)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.host = 0.0
        self.calls = 0
        self.samples = 0
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def __enter__(self) -> ForwardTimes:
        inner = self.model.forward
        cuda = next(self.model.parameters()).is_cuda

        def forward(x, *args, **kwargs):
            started = time.perf_counter()
            if cuda:
                begin, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                begin.record()
            out = inner(x, *args, **kwargs)
            if cuda:
                end.record()
                self.events.append((begin, end))
            self.host += time.perf_counter() - started
            self.calls += 1
            self.samples += int(x.shape[0])
            return out

        self.model.forward = forward
        return self

    def __exit__(self, *exc) -> None:
        del self.model.forward

    def device_seconds(self) -> float | None:
        if not self.events:
            return None
        torch.cuda.synchronize()
        return sum(b.elapsed_time(e) for b, e in self.events) / 1e3


def merged_run(
    model,
    image,
    device,
    *,
    jobs: int,
    n: int,
    job_batch: int,
    max_batch: int,
):
    """``jobs`` concurrent certifications through one batcher: samples/s, the batches' mean
    size and jobs, the certificates, the wall seconds and the forward passes' times."""
    records: list[BatchRecord] = []
    batcher = ForwardBatcher(
        model,
        max_batch=max_batch,
        max_delay_seconds=0.005,
        model_name="bench",
        on_batch=records.append,
    )

    def job(index: int):
        with batcher.session(f"job-{index}") as batched:
            return smoothing_certify(
                batched, image, sigma=SIGMA, n=n, batch_size=job_batch, seed=1000 + index
            )

    with ThreadPoolExecutor(jobs) as pool, ForwardTimes(model) as times:
        started = time.perf_counter()
        certificates = list(pool.map(job, range(jobs)))
        sync(device)
        seconds = time.perf_counter() - started
    samples = jobs * (n + 100)
    sizes = [r.samples for r in records]
    per_batch = [len(r.jobs) for r in records]
    return (
        samples / seconds,
        sum(sizes) / max(1, len(sizes)),
        sum(per_batch) / max(1, len(per_batch)),
        certificates,
        seconds,
        times,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["digits-hycas", "hycas:1,28,28", "hycas:3,32,32", "hycas:3,224,224"],
    )
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--job-batch", type=int, default=1000)
    parser.add_argument("--job-n", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="of the direct run")
    parser.add_argument("--max-seconds", type=float, default=8.0, help="of the merged run")
    parser.add_argument("--max-call-seconds", type=float, default=0.25)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device={device} ({name}) torch={torch.__version__} threads={torch.get_num_threads()} "
        f"jobs={args.jobs} job_batch={args.job_batch} sigma={SIGMA}"
    )
    utilisation = Utilisation(device)
    for spec in args.models:
        model, image = build(spec, device)
        print(f"\n{spec}: input {tuple(image.shape)}")
        rates = sweep(model, image, device, args.max_call_seconds)
        for batch, (rate, seconds) in rates.items():
            print(
                f"  raw forward, batch {batch:>7,}: {rate:>12,.0f} samples/s "
                f"({seconds * 1e3:.2f} ms)"
            )
        best_batch = max(rates, key=lambda b: rates[b][0])
        best_rate, best_call = rates[best_batch]
        _, one_call = forward_rate(model, image, 1, device, args.max_call_seconds)
        print(
            f"  best batch {best_batch:,}: {best_rate:,.0f} samples/s; a call at batch 1 takes "
            f"{one_call * 1e3:.2f} ms = {100 * one_call / best_call:.1f} % of one at the best "
            "batch (the most capturing the forward pass could save there)"
        )

        n = max(best_batch, int(best_rate * args.seconds) // best_batch * best_batch)
        smoothing_certify(model, image, sigma=SIGMA, n=best_batch, batch_size=best_batch, seed=0)
        sync(device)
        with utilisation:
            started = time.perf_counter()
            alone = smoothing_certify(model, image, sigma=SIGMA, n=n, batch_size=best_batch, seed=0)
            sync(device)
            direct_seconds = time.perf_counter() - started
        direct_rate = (n + 100) / direct_seconds
        print(
            f"  direct smoothing_certify n={n:,} batch {best_batch:,}: {direct_rate:,.0f} "
            f"samples/s = {direct_rate / best_rate:.2f}x raw; GPU {utilisation.text()}; "
            f"label {alone.label} radius {alone.radius:.3f}"
        )

        job_batch = min(args.job_batch, best_batch)
        affordable = int(best_rate * args.max_seconds / args.jobs) // job_batch * job_batch
        job_n = max(job_batch, min(args.job_n, affordable))
        merged_run(  # warm-up: threads, the batcher, the merged shapes
            model,
            image,
            device,
            jobs=args.jobs,
            n=job_batch,
            job_batch=job_batch,
            max_batch=best_batch,
        )
        with utilisation:
            rate, mean_batch, mean_jobs, certificates, wall, times = merged_run(
                model,
                image,
                device,
                jobs=args.jobs,
                n=job_n,
                job_batch=job_batch,
                max_batch=best_batch,
            )
        labels = {c.label for c in certificates}
        print(
            f"  {args.jobs} jobs of n={job_n:,} (batch {job_batch:,}) merged: "
            f"{rate:,.0f} samples/s = {rate / best_rate:.2f}x raw, "
            f"{rate / direct_rate:.2f}x direct; mean forward batch {mean_batch:,.0f} "
            f"samples, {mean_jobs:.1f} jobs; GPU {utilisation.text()}; "
            f"labels {sorted(labels, key=str)}"
        )
        busy = times.device_seconds()
        line = (
            f"    forward passes: {times.calls} calls, host {times.host:.2f} s of {wall:.2f} s wall"
        )
        if busy:
            line += (
                f", device {busy:.2f} s ({100 * busy / wall:.0f} % of the wall), "
                f"{times.samples / busy:,.0f} samples per device second = "
                f"{times.samples / busy / best_rate:.2f}x raw"
            )
        print(line)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
