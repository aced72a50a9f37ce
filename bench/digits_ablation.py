"""Do HyCAS's random parts help when they are kept in play? An ablation on digits, several seeds.

    python bench/digits_ablation.py [--epochs 40] [--seeds 0,1,2] [--jobs 2] [--eval-n 500]
                                    [--configurations 0,1,2,3] [--output FILE]

Configurations at one training budget, each trained once per seed by ``hycas train``'s
own code path (``train_and_package``, into a scratch repository; the shipped one is left
alone) and evaluated on the 450-image test split (CERTIFY with n0 = 100, n = ``--eval-n``,
α = 0.001: at n = 500 no smoothing radius exceeds σ·Φ⁻¹(0.001^(1/500)) = 0.55 at σ = 0.25;
the margin certificate of the mean over K = 16 frozen draws of Ω):

- HyCAS with floors: the shipped recipe plus ``--beta-floor`` and ``--gate-floor``;
- HyCAS as shipped: the same recipe, no floors;
- the Lipschitz network without random parts (same recipe);
- the plain CNN (noise only, logit scale 1: it has no bound, so no margin term);
- (4–8, not run by default) HyCAS as shipped but with the margin term on the noisy inputs
  (``margin_inputs="noisy"``: one forward pass per step instead of two), on the clean
  inputs of 16 or 8 images of each batch of 64 (``margin_samples``: a smaller second batch),
  or on the clean inputs of 16 (32) images of each batch with the noise term on the other
  48 (32) (``margin_inputs="split"``: one forward pass of 64).

Prints, per configuration, the mean and the spread (sample standard deviation, and min–max)
over seeds of the clean accuracy and of the certified accuracy of each certificate at the
report radii, and the residual mixes β and gate weights the training left (is the hybrid
block in play?). ``--output`` also writes every run's figures as JSON. Each job runs on one
CPU thread; ``--jobs`` runs that many at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

MARGIN_RECIPE = {"sigma": 0.25, "logit_scale": 10.0, "margin_weight": 0.15, "margin_radius": 0.75}


@dataclass(frozen=True)
class Configuration:
    label: str
    architecture: str
    training: dict[str, float]


CONFIGURATIONS = (
    Configuration(
        "HyCAS, floors β ≥ 0.25, gates ≥ 0.2",
        "hycas",
        {**MARGIN_RECIPE, "beta_floor": 0.25, "gate_floor": 0.2},
    ),
    Configuration("HyCAS as shipped (no floors)", "hycas", MARGIN_RECIPE),
    Configuration("Lipschitz, no random parts", "lipschitz", MARGIN_RECIPE),
    Configuration("plain CNN (noise)", "cnn", {"sigma": 0.25, "logit_scale": 1.0}),
    Configuration(
        "HyCAS, margin on the noisy inputs (one pass)",
        "hycas",
        {**MARGIN_RECIPE, "margin_inputs": "noisy"},
    ),
    Configuration(
        "HyCAS, margin on 16 clean inputs of 64",
        "hycas",
        {**MARGIN_RECIPE, "margin_samples": 16},
    ),
    Configuration(
        "HyCAS, margin on 8 clean inputs of 64",
        "hycas",
        {**MARGIN_RECIPE, "margin_samples": 8},
    ),
    Configuration(
        "HyCAS, margin on 16 clean inputs, noise on the other 48 (one pass)",
        "hycas",
        {**MARGIN_RECIPE, "margin_inputs": "split", "margin_samples": 16},
    ),
    Configuration(
        "HyCAS, margin on 32 clean inputs, noise on the other 32 (one pass)",
        "hycas",
        {**MARGIN_RECIPE, "margin_inputs": "split", "margin_samples": 32},
    ),
)


def run_one(
    index: int, seed: int, epochs: int, evaluation: dict[str, float], repository: str
) -> dict[str, Any]:
    """Train and evaluate configuration ``index`` with ``seed``; its figures as a dict."""
    from models.evaluation import EvaluationSettings
    from models.layers import ConvexGate, ConvexResidual
    from models.training import TrainingRequest, TrainingSettings, train_and_package

    config = CONFIGURATIONS[index]
    request = TrainingRequest(
        model_id=f"ablation-{index}-seed{seed}",
        architecture=config.architecture,
        training=TrainingSettings(epochs=epochs, seed=seed, **config.training),
        evaluation=EvaluationSettings(**evaluation),
        threads=1,
    )
    started = time.perf_counter()
    outcome = train_and_package(request, repository=repository, device="cpu", progress=False)
    import models

    model, _ = models.load(request.model_id, repository=repository)
    betas = [m.beta() for m in model.modules() if isinstance(m, ConvexResidual)]
    gates = [m.weights().detach().tolist() for m in model.modules() if isinstance(m, ConvexGate)]
    summary = outcome.report.summary
    return {
        "configuration": config.label,
        "seed": seed,
        "command": outcome.card.training.command,
        "clean_accuracy": summary.clean_accuracy,
        "certified_accuracy": {
            name: dict(cert.certified_accuracy) for name, cert in summary.certificates.items()
        },
        "lipschitz_bound": outcome.card.lipschitz_bound,
        "betas": betas,
        "gate_weights": gates,
        "train_seconds": outcome.run.wall_seconds,
        "seconds": time.perf_counter() - started,
    }


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f} ({min(values):.3f}–{max(values):.3f})"


def markdown(runs: list[dict[str, Any]], radii: list[str]) -> str:
    header = "| configuration | seeds | clean acc. | certificate | " + " | ".join(
        f"r = {r}" for r in radii
    )
    lines = [header + " |", "|---" * (4 + len(radii)) + "|"]
    for config in CONFIGURATIONS:
        mine = [r for r in runs if r["configuration"] == config.label]
        if not mine:
            continue
        certificates = [c for c in ("smoothing", "margin") if c in mine[0]["certified_accuracy"]]
        for i, name in enumerate(certificates):
            cells = [
                config.label if i == 0 else "",
                str(len(mine)) if i == 0 else "",
                spread([r["clean_accuracy"] for r in mine]) if i == 0 else "",
                name,
                *(
                    spread([r["certified_accuracy"][name][radius] for r in mine])
                    for radius in radii
                ),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mixes(runs: list[dict[str, Any]]) -> str:
    lines = []
    for run in runs:
        if run["betas"]:
            gates = "; ".join(", ".join(f"{w:.3f}" for w in g) for g in run["gate_weights"])
            betas = ", ".join(f"{b:.3f}" for b in run["betas"])
            lines.append(
                f"- {run['configuration']}, seed {run['seed']}: β = {betas}; "
                f"gate weights (AOL, [random projection,] frequency) = {gates}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--eval-n", type=int, default=500)
    parser.add_argument(
        "--configurations",
        default="0,1,2,3",
        help="indices of the configurations to run (0-8, see above)",
    )
    parser.add_argument("--output", type=Path, help="write every run's figures here (JSON)")
    args = parser.parse_args()
    chosen = [int(i) for i in args.configurations.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    evaluation = {"n0": 100, "n": args.eval_n, "alpha": 0.001, "batch_size": 1000, "ensemble": 16}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as repository:
        jobs = [(i, seed) for seed in seeds for i in chosen]
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(run_one, i, seed, args.epochs, evaluation, repository)
                for i, seed in jobs
            ]
            runs = [f.result() for f in futures]
    radii = list(runs[0]["certified_accuracy"]["smoothing"])
    print(
        f"epochs={args.epochs} seeds={seeds} evaluation={evaluation} jobs={args.jobs} "
        f"(one thread each) wall={time.perf_counter() - started:.0f}s"
    )
    print(markdown(runs, radii))
    print()
    print(mixes(runs))
    for config in (CONFIGURATIONS[i] for i in chosen):
        seconds = [r["train_seconds"] for r in runs if r["configuration"] == config.label]
        print(f"{config.label}: training {statistics.fmean(seconds):.0f} s per run")
    if args.output:
        args.output.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
