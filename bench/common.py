"""What the benches share: their command line, the shipped model and image, the header line.

``bench_parser(__doc__, model="digits-hycas", repeats=3)`` is the parser of a bench whose
description is the first line of its docstring, with ``--model`` and one integer option per
keyword; ``shipped_model(model_id)`` loads a model and the first test image of its dataset;
``header(card, image, ...)`` is the first line a bench prints (what ran, on how many threads).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import models
from models.data import load_dataset


def bench_parser(doc: str, *, model: str | None = None, **integers: int) -> argparse.ArgumentParser:
    """The bench's parser: ``--model`` (when a default is given) and ``--name`` (an integer,
    ``name_with_underscores`` spelled ``--name-with-underscores``) for each keyword."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    if model is not None:
        parser.add_argument("--model", default=model)
    for name, default in integers.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    return parser


def shipped_model(model_id: str) -> tuple[Any, Any, torch.Tensor]:
    """The model ``model_id`` of the repository, its card, and the first test image of its
    dataset."""
    model, card = models.load(model_id)
    image = load_dataset(card.dataset.name, split="test").images[0]
    return model, card, image


def header(card: Any, image: torch.Tensor, **extra: object) -> str:
    """The model, its input and σ, the thread count and the torch version, then ``extra``."""
    fields = [
        f"model={card.id} v{card.version}",
        f"input={tuple(image.shape)}",
        f"sigma={card.sigma}",
        f"threads={torch.get_num_threads()}",
        f"torch={torch.__version__}",
        *(f"{name}={value}" for name, value in extra.items()),
    ]
    return " ".join(fields)
