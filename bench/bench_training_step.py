"""One training step of HyCAS against the plain CNN baseline, and where the HyCAS step goes.

    python bench/bench_training_step.py [--shape 1,28,28] [--batch 64] [--repeats 20]
                                        [--threads 1] [--profile-steps 5]
                                        [--cnn-channels-last] [--certified-steps]
                                        [--ablate] [--bfloat16]

Both networks take the step of ``models.training.trainer.training_step`` inside
``models.layers.fast_training`` (as ``hycas train`` does) on the same batch, with the same
thread count, alternating in one process: HyCAS with the shipped recipe's
objective (noise σ = 0.25, margin term λ = 0.15, r = 0.75) and its cheaper variants: the
margin term on the clean inputs (as shipped, a second batch through the network), on the clean
inputs of 16 or 8 of the 64 images (``margin_samples``, a smaller second batch), and on the
noisy inputs of the noise term (``margin_inputs="noisy"``, one forward pass); the plain CNN
with noise only (it has no bound, so no margin term); Adam for all. Prints the median
step times and their ratio (wall clock and CPU time of this process, the steadier figure
on a shared machine), then a torch.profiler breakdown of the HyCAS step by layer
family: each family's forward ops and the backward ops autograd runs for them (matched by
sequence number), self CPU time. ``--certified-steps`` adds HyCAS steps outside
``fast_training`` (the float64 derived weights of certification in every step).
``--bfloat16`` adds the plain CNN and the ``--margin-samples 16`` objective with their
forward passes in bfloat16 (``precision="bfloat16"``, as ``hycas train --precision
bfloat16``): faster only on a CPU with bfloat16 units (``avx512_bf16``, AMX).
``--ablate`` prices the HyCAS families another way, robust to the profiler's own cost on
many small operations: the ``--margin-samples 16`` step timed again with one family replaced
by a stand-in of almost no cost (the frequency branch by ``w · x``, the attention noise, the
residual mixes and MaxMin by the identity), alternating with the whole step in one process;
the difference is what that family costs (a timing device only: the stand-ins are not
networks anyone trains).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from unittest import mock

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from models import build_hycas, layers
from models.baselines import PlainCNN, build_plain_cnn
from models.training.losses import margin_offset
from models.training.trainer import TrainingSettings, training_step

HYCAS_SETTINGS = TrainingSettings(
    sigma=0.25, logit_scale=10.0, margin_weight=0.15, margin_radius=0.75
)
HYCAS_VARIANTS = {
    "HyCAS (noise + margin on 16 of 64)": dataclasses.replace(HYCAS_SETTINGS, margin_samples=16),
    "HyCAS (noise + margin on 8 of 64)": dataclasses.replace(HYCAS_SETTINGS, margin_samples=8),
    "HyCAS (noise + margin, one pass)": dataclasses.replace(HYCAS_SETTINGS, margin_inputs="noisy"),
    "HyCAS (48 noisy + 16 clean, one pass)": dataclasses.replace(
        HYCAS_SETTINGS, margin_inputs="split", margin_samples=16
    ),
}
ABLATED_OBJECTIVE = "HyCAS (noise + margin on 16 of 64)"
ABLATIONS: dict[str, tuple[type, str, Callable]] = {
    "frequency branch": (
        layers.FrequencyFilter,
        "weighted_training_output",
        lambda self, x, weight: weight * x,
    ),
    "attention noise": (layers.StochasticAttention, "forward", lambda self, x, omega: x),
    "residual mixes": (
        layers.ConvexResidual,
        "forward",
        lambda self, x, omega=None: layers.apply_layer(self.body, x, omega),
    ),
    "MaxMin": (layers.MaxMin, "forward", lambda self, x: x),
}
"""Stand-ins for ``--ablate``: the family, the method replaced, and its near-free stand-in."""
CNN_SETTINGS = TrainingSettings(sigma=0.25, logit_scale=1.0, margin_weight=0.0)

FAMILIES: dict[type, str] = {
    layers.AOLConv2d: "AOL convolutions",
    layers.RandomProjectionConv2d: "random projection",
    layers.FrequencyFilter: "frequency branch (DCT, mask)",
    layers.StochasticAttention: "attention noise",
    layers.ConvexGate: "gates and residuals",
    layers.ConvexResidual: "gates and residuals",
    layers.AdditiveSkip: "gates and residuals",
    layers.MaxMin: "MaxMin",
    layers.NormalizedLinear: "head",
    layers.ScaledAvgPool2d: "standardize, pooling, reshapes",
    layers.Flatten: "standardize, pooling, reshapes",
    layers.Standardize: "standardize, pooling, reshapes",
    layers.InvertibleDownsample: "standardize, pooling, reshapes",
    nn.Conv2d: "convolutions",
    nn.Linear: "linear layers",
    nn.ReLU: "ReLU, pooling",
    nn.MaxPool2d: "ReLU, pooling",
    nn.AdaptiveAvgPool2d: "ReLU, pooling",
}
DERIVED_WEIGHTS: dict[type, tuple[str, tuple[str, ...]]] = {
    layers.AOLConv2d: (
        "AOL rescaling (derived weights)",
        ("effective_weight", "training_kernel"),
    ),
    layers.NormalizedLinear: (
        "head normalisation (derived weights)",
        ("effective_weight", "training_weight"),
    ),
}
"""Layers whose derived-weight methods (certified, shortcut) are timed apart from the rest of
their forward pass. With the shortcuts, a gate's merged convolution (AOL and random projection
in one) counts under gates, an invertible downsampling fused with the 1×1 AOL convolution after
it (one strided convolution) under AOL convolutions, and a frequency branch whose gate weight is
folded into its mixing kernel under the frequency branch."""


def _labelled(fn: Callable, label: str) -> Callable:
    def run(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)

    return run


def _labelled_fusion(fused_with: Callable, label: str) -> Callable:
    def fuse(following):
        fused = fused_with(following)
        return None if fused is None else _labelled(fused, label)

    return fuse


def label_families(model: nn.Module) -> None:
    """Wrap each module's forward (and derived-weight method, and the fused map of a training
    shortcut) in a profiler range."""
    for module in model.modules():
        family = FAMILIES.get(type(module))
        if family is not None:
            module.forward = _labelled(module.forward, "family: " + family)
        if isinstance(module, layers.InvertibleDownsample):
            module.fused_with = _labelled_fusion(module.fused_with, "family: AOL convolutions")
        if isinstance(module, layers.FrequencyFilter):
            module.weighted_training_output = _labelled(
                module.weighted_training_output, "family: " + FAMILIES[type(module)]
            )
        label, methods = DERIVED_WEIGHTS.get(type(module), ("", ()))
        for method in methods:
            setattr(module, method, _labelled(getattr(module, method), "family: " + label))


def family_times(events) -> dict[str, float]:
    """Self CPU milliseconds per family: an op counts for the innermost family range around it;
    a backward op for the family of the forward op with its sequence number."""
    parents = {}
    for event in events:
        for child in event.cpu_children:
            parents[child.id] = event

    def enclosing(event) -> tuple[str | None, int | None]:
        seq = None
        while event is not None:
            if event.name.startswith("family: "):
                return event.name[len("family: ") :], None
            if event.name.startswith("Optimizer."):
                return "Adam (optimizer step, zero_grad)", None
            if event.name.startswith("autograd::engine::evaluate_function"):
                seq = event.sequence_nr
            event = parents.get(event.id)
        return None, seq

    forward_family: dict[int, str] = {}
    for event in events:
        family, _ = enclosing(event)
        if family is not None and event.sequence_nr >= 0:
            forward_family.setdefault(event.sequence_nr, family)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name.startswith("family: ") or event.name.startswith("Optimizer."):
            continue
        family, seq = enclosing(event)
        if family is None and seq is not None:
            family = forward_family.get(seq)
        totals[family or "other (noise, loss, autograd glue)"] += event.self_cpu_time_total / 1e3
    return dict(totals)


class Stepper:
    """One network, its optimizer and objective, stepping on a fixed batch."""

    def __init__(
        self,
        model: nn.Module,
        settings: TrainingSettings,
        x,
        y,
        *,
        shortcuts: bool = True,
        capturable: bool = False,
    ) -> None:
        self.model, self.settings, self.x, self.y = model.train(), settings, x, y
        self.shortcuts = shortcuts
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=capturable)
        self.generator = torch.Generator(device=x.device).manual_seed(1)
        bound = model.lipschitz_bound() if settings.margin_weight > 0 else None
        self.offset = 0.0 if bound is None else margin_offset(settings.margin_radius, bound)

    def step(self) -> tuple[float, float]:
        """One step; returns its wall-clock and its CPU seconds (this process); on CUDA the
        step's kernels are waited for before and after."""
        synchronize(self.x.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        self.run()
        synchronize(self.x.device)
        return time.perf_counter() - start, time.process_time() - cpu_start

    def run(self) -> None:
        """One step, untimed and unsynchronised (what a CUDA graph captures)."""
        with layers.fast_training(self.model) if self.shortcuts else nullcontext():
            training_step(
                self.model,
                self.optimizer,
                self.x,
                self.y,
                self.settings,
                offset=self.offset,
                generator=self.generator,
            )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def graphed_step_ms(model: nn.Module, settings: TrainingSettings, x, y, repeats: int) -> float:
    """Median milliseconds of one training step captured whole (forward, backward, Adam) in a
    CUDA graph and replayed: what the step costs without the host's op dispatch. The noise
    and Ω generator is registered with the graph, so each replay draws fresh numbers."""
    stepper = Stepper(model, settings, x, y, capturable=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            stepper.run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(stepper.generator)
    with torch.cuda.graph(graph):
        stepper.run()
    times = []
    for _ in range(repeats + 3):
        synchronize(x.device)
        started = time.perf_counter()
        graph.replay()
        synchronize(x.device)
        times.append(time.perf_counter() - started)
    return statistics.median(times[3:]) * 1e3


def capture_failure(error: BaseException) -> str:
    """The first error of a failed capture (the one the others were raised while handling)
    and the last line of this project's code it went through."""
    while error.__context__ is not None:
        error = error.__context__
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename]
    where = f" at {ours[-1].filename}:{ours[-1].lineno} ({ours[-1].line})" if ours else ""
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}{where}"


def without(family: str | None):
    """The HyCAS layers of ``family`` replaced by their stand-in (nothing for ``None``)."""
    if family is None:
        return nullcontext()
    cls, method, stand_in = ABLATIONS[family]
    return mock.patch.object(cls, method, stand_in)


def ablate(x, y, repeats: int) -> None:
    """The ``--margin-samples 16`` step, whole and with each family replaced, alternating."""
    settings = HYCAS_VARIANTS[ABLATED_OBJECTIVE]
    runs: dict[str | None, Stepper] = {}
    for family in (None, *ABLATIONS):
        torch.manual_seed(0)
        runs[family] = Stepper(build_hycas(tuple(x.shape[1:]), 10).to(x.device), settings, x, y)
    cpu: dict[str | None, list[float]] = {family: [] for family in runs}
    for round_ in range(repeats + 3):
        for family, stepper in runs.items():
            with without(family):
                _, seconds = stepper.step()
            if round_ >= 3:
                cpu[family].append(seconds)
    whole = statistics.median(cpu[None])
    print(f"\n{ABLATED_OBJECTIVE}: CPU ms per step, whole and with one family replaced")
    print(f"  {'whole step':<40} {whole * 1e3:>8.1f} ms")
    for family in ABLATIONS:
        cost = whole - statistics.median(cpu[family])
        print(f"  {family:<40} {cost * 1e3:>8.1f} ms {100 * cost / whole:>5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1,28,28")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1… (profile: CPU only)")
    parser.add_argument(
        "--certified-steps",
        action="store_true",
        help="also time HyCAS steps without fast_training (float64 derived weights each step)",
    )
    parser.add_argument(
        "--cnn-channels-last",
        action="store_true",
        help="also time the plain CNN with its weights and batch channels-last",
    )
    parser.add_argument(
        "--bfloat16",
        action="store_true",
        help="also time the CNN and HyCAS (16 of 64) with bfloat16 forward passes",
    )
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="on CUDA, also time the HyCAS steps captured whole in a CUDA graph and replayed",
    )
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="also price each HyCAS family by replacing it with a near-free stand-in",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.shape.split(","))
    g = torch.Generator().manual_seed(0)
    device = torch.device(args.device)
    x = torch.rand(args.batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)

    def cnn():
        return build_plain_cnn(shape, 10).to(device)

    def hycas():
        return build_hycas(shape, 10).to(device)

    torch.manual_seed(0)
    steppers = {
        "plain CNN (noise)": Stepper(cnn(), CNN_SETTINGS, x, y),
        "HyCAS (noise + margin)": Stepper(hycas(), HYCAS_SETTINGS, x, y),
    }
    for name, settings in HYCAS_VARIANTS.items():
        steppers[name] = Stepper(hycas(), settings, x, y)
    if args.cnn_channels_last:
        channels_last = cnn().to(memory_format=torch.channels_last)
        steppers["plain CNN, channels-last"] = Stepper(
            channels_last, CNN_SETTINGS, x.contiguous(memory_format=torch.channels_last), y
        )
    if args.bfloat16:
        steppers["plain CNN (noise), bfloat16"] = Stepper(
            cnn(),
            dataclasses.replace(CNN_SETTINGS, precision="bfloat16"),
            x,
            y,
        )
        steppers["HyCAS (16 of 64), bfloat16"] = Stepper(
            hycas(),
            dataclasses.replace(HYCAS_VARIANTS[ABLATED_OBJECTIVE], precision="bfloat16"),
            x,
            y,
        )
    if args.certified_steps:
        steppers["HyCAS, certified weights each step"] = Stepper(
            hycas(), HYCAS_SETTINGS, x, y, shortcuts=False
        )
    print(
        f"shape={shape} batch={args.batch} threads={torch.get_num_threads()} "
        f"repeats={args.repeats} torch={torch.__version__} device={device}"
    )
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steppers}
    for _ in range(3):
        for stepper in steppers.values():
            stepper.step()
    for _ in range(args.repeats):
        for name, stepper in steppers.items():
            times[name].append(stepper.step())
    wall = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) for name, t in times.items()}
    reference = "plain CNN (noise)"
    print(f"{'step':<40} {'median ms':>10} {'min ms':>8} {'vs CNN':>8} {'CPU ms':>8} {'vs CNN':>8}")
    for name, t in times.items():
        print(
            f"{name:<40} {wall[name] * 1e3:>10.1f} {min(w for w, _ in t) * 1e3:>8.1f} "
            f"{wall[name] / wall[reference]:>7.2f}x {cpu[name] * 1e3:>8.1f} "
            f"{cpu[name] / cpu[reference]:>7.2f}x"
        )
    if args.ablate:
        ablate(x, y, args.repeats)
    if args.cuda_graph and device.type == "cuda":
        print("\nCaptured in a CUDA graph (Adam capturable, one replay a step):")
        graph_rows = {"plain CNN (noise)": (cnn, CNN_SETTINGS)}
        graph_rows["HyCAS (noise + margin)"] = (hycas, HYCAS_SETTINGS)
        graph_rows["HyCAS (noise + margin, one pass)"] = (
            hycas,
            HYCAS_VARIANTS["HyCAS (noise + margin, one pass)"],
        )
        graph_rows["HyCAS (noise + margin, one pass), bfloat16"] = (
            hycas,
            dataclasses.replace(
                HYCAS_VARIANTS["HyCAS (noise + margin, one pass)"], precision="bfloat16"
            ),
        )
        for name, (build, settings) in graph_rows.items():
            try:
                ms = graphed_step_ms(build(), settings, x, y, args.repeats)
            except Exception as error:  # an op that cannot be captured: say which
                print(f"  {name:<45} not captured: {capture_failure(error)}")
                continue
            print(f"  {name:<45} {ms:>8.2f} ms {ms / (wall[reference] * 1e3):>7.2f}x eager CNN")

    for name, stepper in steppers.items():
        # The variants profile as the shipped objective does; the profile reads CPU time.
        if name in HYCAS_VARIANTS or args.profile_steps < 1 or device.type != "cpu":
            continue
        label_families(stepper.model)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile_steps):
                stepper.step()
        totals = family_times(prof.events())
        whole = sum(totals.values())
        print(f"\n{name}: self CPU time per step by layer family ({args.profile_steps} steps)")
        for family, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
            per_step = ms / args.profile_steps
            print(f"  {family:<40} {per_step:>8.1f} ms {100 * ms / whole:>5.1f} %")
        if isinstance(stepper.model, PlainCNN):
            continue
        print("  top ops:")
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
        print("\n".join("    " + line for line in table.splitlines()))


if __name__ == "__main__":
    main()
