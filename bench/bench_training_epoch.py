"""Planning figures: one training epoch on a synthetic MedMNIST-format file, HyCAS and the CNN.

    python bench/bench_training_epoch.py [--images 7000] [--threads 1] [--shapes 1,28,28 3,32,32]
                                         [--device cpu] [--precision float32]

No 28×28 medical data set is available offline, so for each shape this writes a MedMNIST
``.npz`` of ``--images`` random training images (uint8 ``[N, H, W]`` grey as
``pneumoniamnist.npz``, ``[N, H, W, 3]`` RGB as ``dermamnist.npz``; random labels) in a
temporary folder, reads it back through ``models.data.load_dataset`` and times one epoch of
``train_classifier`` (batch 64): the default HyCAS with the shipped recipe (noise + margin,
λ = 0.15), with the margin term on the clean inputs (a second batch each step), on the clean
inputs of 16 images of each 64 (``margin_samples=16``) and on the noisy ones
(``margin_inputs="noisy"``, one pass), and the plain CNN with noise only. Random
pixels cost what real ones cost: the figures are the time of an epoch, not of learning
anything. ``--device cuda`` trains on a GPU (the data set is moved there once, as ``hycas train
--device cuda`` does); ``--precision bfloat16`` runs the forward passes in mixed precision
(``hycas train --precision bfloat16``).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.architectures import build_model
from models.data import load_dataset
from models.training import TrainingSettings, train_classifier

SHIPPED_HYCAS = TrainingSettings(
    epochs=1, sigma=0.25, logit_scale=10.0, margin_weight=0.15, margin_radius=0.75
)
RECIPES = {
    "cnn": TrainingSettings(epochs=1, sigma=0.25, logit_scale=1.0),
    "hycas": SHIPPED_HYCAS,
    "hycas, 16 of 64": dataclasses.replace(SHIPPED_HYCAS, margin_samples=16),
    "hycas, one pass": dataclasses.replace(SHIPPED_HYCAS, margin_inputs="noisy"),
}


def write_medmnist(folder: Path, shape: tuple[int, int, int], images: int) -> tuple[str, Path]:
    """A MedMNIST-format file of random images; its dataset name and path."""
    c, h, w = shape
    name, classes = ("pneumoniamnist", 2) if c == 1 else ("dermamnist", 7)
    rng = np.random.default_rng(0)
    pixels = (h, w) if c == 1 else (h, w, 3)
    arrays = {}
    for split, count in (("train", images), ("val", 64), ("test", 64)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, *pixels), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, classes, (count, 1), dtype=np.int64)
    path = folder / f"{name}.npz"
    np.savez(path, **arrays)
    return name, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=7000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", nargs="+", default=["1,28,28", "3,32,32"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"images={args.images} batch=64 threads={torch.get_num_threads()} "
        f"torch={torch.__version__} device={args.device} precision={args.precision}"
    )
    print(f"{'shape':<10} {'network':<16} {'steps':>6} {'s/epoch':>9} {'ms/step':>8} {'vs CNN':>7}")
    with tempfile.TemporaryDirectory() as folder:
        for text in args.shapes:
            shape = tuple(int(v) for v in text.split(","))
            (Path(folder) / "warm-up").mkdir(exist_ok=True)
            name, path = write_medmnist(Path(folder) / "warm-up", shape, 128)
            warm_up = load_dataset(name, "train", path)
            name, path = write_medmnist(Path(folder), shape, args.images)
            data = load_dataset(name, "train", path)
            seconds = {}
            for architecture, settings in RECIPES.items():
                settings = dataclasses.replace(settings, precision=args.precision)
                # Untimed: the first steps of a network pay for kernel choice and allocation.
                train(architecture, warm_up, settings, args.device)
                started = time.perf_counter()
                run = train(architecture, data, settings, args.device)
                seconds[architecture] = time.perf_counter() - started
                print(
                    f"{text:<10} {architecture:<16} {run.steps:>6} {seconds[architecture]:>9.1f} "
                    f"{1e3 * seconds[architecture] / run.steps:>8.1f} "
                    f"{seconds[architecture] / seconds['cnn']:>6.2f}x"
                )


def train(architecture: str, data, settings: TrainingSettings, device: str):
    """One epoch of a fresh network of ``architecture`` (``"hycas, …"`` is HyCAS)."""
    torch.manual_seed(0)
    model = build_model(
        architecture.split(",")[0], data.input_shape, len(data.class_names), trainable=True
    )
    return train_classifier(model, data, settings, device=device, progress=False)


if __name__ == "__main__":
    main()
