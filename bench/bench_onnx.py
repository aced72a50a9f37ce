"""An outside classifier through onnxruntime against the same network in PyTorch: forward
throughput of the noisy batches smoothing draws, as a ratio, in one process.

    python bench/bench_onnx.py [--threads 2] [--batch 1000] [--repeats 7]

The network is the plain CNN of the baselines at 3×32×32 (untrained: throughput does not depend
on the weights). It is exported with ``torch.onnx.export`` and imported as an ``onnx`` package
(:mod:`models.onnx_classifier`); both sides run on the CPU with the same thread count (torch's
intra-op threads and onnxruntime's default session, which uses the physical cores). Prints the
median samples/s of each side over interleaved repeats, their ratio, and the largest logit
difference on the batch.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from models.baselines import build_plain_cnn
from models.onnx_classifier import import_onnx, parse_normalization
from models.repository import load

SHAPE = (3, 32, 32)


class Exportable(nn.Module):
    """The CNN's forward without the protocol's keyword arguments (what the exporter traces)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def samples_per_second(forward, batch: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        forward(batch)
    return batch.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cnn = build_plain_cnn(SHAPE, 10).eval()
    graph = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Exportable(cnn),
            (torch.zeros(1, *SHAPE),),
            graph,
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "cnn.onnx").write_bytes(graph.getvalue())
        # The CNN normalises inside its graph: the package adds no normalisation of its own.
        import_onnx(
            Path(folder) / "cnn.onnx",
            model_id="bench-cnn",
            input_shape=SHAPE,
            class_names=[str(i) for i in range(10)],
            sigma=0.25,
            normalization=parse_normalization(None, SHAPE[0]),
            repository=folder,
        )
        wrapped, _ = load("bench-cnn", repository=folder)
    noisy = (torch.rand(args.batch, *SHAPE) + 0.25 * torch.randn(args.batch, *SHAPE)).float()
    with torch.inference_mode():
        difference = (wrapped(noisy) - cnn(noisy)).abs().max().item()
        cnn(noisy), wrapped(noisy)  # warm-up of both sides
    torch_rates, onnx_rates = [], []
    for _ in range(args.repeats):  # interleaved: a load change hits both sides alike
        torch_rates.append(samples_per_second(cnn, noisy))
        onnx_rates.append(samples_per_second(wrapped, noisy))
    torch_rate, onnx_rate = statistics.median(torch_rates), statistics.median(onnx_rates)
    print(f"plain CNN {SHAPE}, batch {args.batch}, {args.threads} torch threads, CPU")
    print(f"PyTorch:      {torch_rate:10,.0f} samples/s (median of {args.repeats})")
    print(f"onnxruntime:  {onnx_rate:10,.0f} samples/s (median of {args.repeats})")
    print(f"ratio onnxruntime / PyTorch: {onnx_rate / torch_rate:.2f}")
    print(f"largest logit difference: {difference:.2e}")


if __name__ == "__main__":
    main()
