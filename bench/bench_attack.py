"""How loose are the certificates of a packaged model? Attack distance over certified radius.

    python -m bench.bench_attack [--model digits-hycas] [--margin-images 450] [--ensemble 1]
                                 [--steps 100] [--restarts 2] [--smoothing-images 40]

On the model's test split, for each image: the margin certificate of the frozen ensemble
``F_K`` (K = ``--ensemble``, the service's default 1) and a minimum-norm attack on the same ``F_K``
(:func:`certify.margin_attack`); on the first ``--smoothing-images`` images also CERTIFY for
the smoothed classifier g (n0 = 100, n = 10,000, α = 0.001) and an attack on g confirmed by
PREDICT (:func:`certify.smoothing_attack`). Prints the median and quartiles of the ratio
found / certified per classifier (images where the classifier is certified with a positive
radius and the attack found a point), how many attacks found one, and every case where an
attack landed inside a certified radius (there must be none: the margin bound is proved, and
for smoothing it would be a 1 − α event or a bug).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import models
from certify import margin_attack, margin_certify, smoothing_attack, smoothing_certify
from models.data import load_dataset


def quartiles(values: list[float]) -> str:
    if not values:
        return "no image"
    if len(values) == 1:
        return f"median {values[0]:.2f}"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"median {q2:.2f} (quartiles {q1:.2f}–{q3:.2f}, {len(values)} images)"


def compare(kind: str, index: int, attack, certificate, ratios: list, inside: list) -> bool:
    """Whether the attack found a point; its distance over the certified radius of the same
    image goes to ``ratios`` and, when below that radius (a soundness failure), to ``inside``."""
    if attack.distance is None:
        return False
    if attack.distance < certificate.radius:
        inside.append((kind, index, attack.distance, certificate.radius))
    if certificate.radius > 0:
        ratios.append(attack.distance / certificate.radius)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-hycas")
    parser.add_argument("--margin-images", type=int, default=450)
    parser.add_argument("--smoothing-images", type=int, default=40)
    parser.add_argument("--ensemble", type=int, default=1, help="K (the service's default: 1)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, card = models.load(args.model)
    model.eval()
    dataset = load_dataset(card.dataset.name, "test")
    sigma = card.sigma
    print(
        f"{card.id} v{card.version} on {dataset.name}/test, K = {args.ensemble}, σ = {sigma:g}, "
        f"torch {torch.__version__}, {args.threads} thread(s)"
    )

    started = time.perf_counter()
    margin_ratios, inside, found_margin = [], [], 0
    count = min(args.margin_images, len(dataset))
    for index in range(count):
        image = dataset.images[index]
        certificate = margin_certify(model, image, ensemble=args.ensemble, seed=0)
        attack = margin_attack(
            model,
            image,
            ensemble=args.ensemble,
            seed=0,
            attack_seed=index,
            steps=args.steps,
            restarts=args.restarts,
        )
        found_margin += compare("margin", index, attack, certificate, margin_ratios, inside)
    print(
        f"F_K (margin): attack found a flip on {found_margin}/{count} images; found / certified "
        f"{quartiles(margin_ratios)} [{time.perf_counter() - started:.0f} s]"
    )

    started = time.perf_counter()
    smoothing_ratios, found_smoothing, certified = [], 0, 0
    count = min(args.smoothing_images, len(dataset))
    for index in range(count):
        image = dataset.images[index]
        certificate = smoothing_certify(model, image, sigma=sigma, n=10_000, seed=index)
        if certificate.label is None:
            continue
        certified += 1
        attack = smoothing_attack(
            model, image, sigma=sigma, label=certificate.label, seed=index, max_queries=200_000
        )
        found_smoothing += compare(
            "smoothing", index, attack, certificate, smoothing_ratios, inside
        )
    print(
        f"g (smoothing): {certified}/{count} images certified; attack confirmed a flip on "
        f"{found_smoothing}; found / certified {quartiles(smoothing_ratios)} "
        f"[{time.perf_counter() - started:.0f} s]"
    )
    print(f"attacks inside a certified radius: {len(inside)} {inside}")


if __name__ == "__main__":
    main()
