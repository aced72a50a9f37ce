"""Evaluate a model on a dataset split with the smoothing and margin certificates.

This is the one module of :mod:`models` that calls :mod:`certify`: it turns a dataset into
certification calls (as the workers turn a job into them) and summarizes the outcome.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm import tqdm

import certify
from certify.seeds import derive_seeds
from models.data import ImageDataset
from models.evaluation.report import (
    EvaluationReport,
    EvaluationSettings,
    EvaluationSummary,
    ImageCertificates,
    certified_accuracy,
    summarize_certificate,
)
from models.protocol import CertifiableModel


def has_lipschitz_bound(model: CertifiableModel) -> bool:
    """Whether the model states a certified Lipschitz bound (and so has a margin certificate)."""
    return model.lipschitz_bound() is not None


@torch.inference_mode()
def clean_predictions(
    model: CertifiableModel, images: torch.Tensor, *, seed: int, batch_size: int
) -> torch.Tensor:
    """The base classifier's classes on clean images, a fresh Ω per image from ``seed``."""
    device = certify.model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    predictions = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        logits = model(batch, generator=generator)
        predictions.append(logits.argmax(dim=1).cpu())
    return torch.cat(predictions)


def evaluate_classifier(
    model: CertifiableModel,
    dataset: ImageDataset,
    settings: EvaluationSettings,
    *,
    model_id: str,
    version: str,
    sha256: str,
    progress: bool = True,
) -> EvaluationReport:
    """Clean accuracy and the certificates of every image of ``dataset``.

    Smoothing (``certify.smoothing_certify`` at ``settings.sigma``) runs on every image with
    its own seed derived from ``settings.seed``; the margin certificate
    (``certify.margin_certify``) runs when the model has a Lipschitz bound, for ONE frozen
    ensemble ``F_K`` (the same K draws for every image, so the summary describes one
    classifier).
    """
    started = time.perf_counter()
    model.eval()
    margin = has_lipschitz_bound(model)
    if settings.smoothing and settings.sigma is None:
        raise ValueError("the smoothing certificate needs a sigma; settings.sigma is None")
    if not settings.smoothing and not margin:
        raise ValueError("nothing to certify: smoothing is off and the model has no bound")
    clean = clean_predictions(model, dataset.images, seed=settings.seed, batch_size=256)
    image_seeds = derive_seeds(settings.seed, len(dataset))
    records = []
    for i in tqdm(range(len(dataset)), desc="certify", unit="image", disable=not progress):
        x = dataset.images[i]
        fields: dict[str, Any] = {}
        if settings.smoothing:
            smoothed = certify.smoothing_certify(
                model,
                x,
                sigma=settings.sigma,
                n0=settings.n0,
                n=settings.n,
                alpha=settings.alpha,
                batch_size=settings.batch_size,
                seed=image_seeds[i],
            )
            fields.update(smoothing_label=smoothed.label, smoothing_radius=smoothed.radius)
        if margin:
            certificate = certify.margin_certify(
                model, x, ensemble=settings.ensemble, seed=settings.seed
            )
            fields.update(margin_label=certificate.label, margin_radius=certificate.radius)
        records.append(
            ImageCertificates(
                index=i,
                label=int(dataset.labels[i]),
                clean_prediction=int(clean[i]),
                **fields,
            )
        )
    images = tuple(records)
    names = [name for name, run in (("smoothing", settings.smoothing), ("margin", margin)) if run]
    if len(names) == 2:
        names.append("either")
    summary = EvaluationSummary(
        dataset=dataset.name,
        split=dataset.split,
        images=len(dataset),
        clean_accuracy=float((clean == dataset.labels).double().mean()),
        ensemble_accuracy=certified_accuracy(images, "margin", 0.0) if margin else None,
        smoothed_accuracy=(
            certified_accuracy(images, "smoothing", 0.0) if settings.smoothing else None
        ),
        certificates={name: summarize_certificate(images, name, settings.radii) for name in names},
        lipschitz_bound=float(model.lipschitz_bound()) if margin else None,
        settings=settings,
        wall_seconds=time.perf_counter() - started,
    )
    return EvaluationReport(
        model_id=model_id, version=version, sha256=sha256, summary=summary, images=images
    )
