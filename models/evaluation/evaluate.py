"""Evaluate a model on a dataset split with the smoothing and margin certificates (and, if
asked, minimum-norm attacks on the classifier of each).

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
    summarize_attack,
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
    classifier). With ``settings.attack``, each classifier is attacked on every image its
    certificate answers: ``certify.smoothing_attack`` at the label CERTIFY found, and
    ``certify.margin_attack`` on the same ``F_K``, each seeded per image.
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
    # The child after the images' seeds the attacks, so no attack replays a certificate's noise.
    attack_seeds = derive_seeds(derive_seeds(settings.seed, len(dataset) + 1)[-1], len(dataset))
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
        if settings.attack:
            fields.update(_attacks(model, x, settings, fields, attack_seeds[i]))
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
        attacks=(
            {
                name: summarize_attack(images, name, settings.radii)
                for name in names
                if name != "either"
            }
            if settings.attack
            else None
        ),
        lipschitz_bound=float(model.lipschitz_bound()) if margin else None,
        settings=settings,
        wall_seconds=time.perf_counter() - started,
    )
    return EvaluationReport(
        model_id=model_id, version=version, sha256=sha256, summary=summary, images=images
    )


def _attacks(
    model: CertifiableModel,
    x: torch.Tensor,
    settings: EvaluationSettings,
    certificates: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """The attacks on the classifiers whose certificate answered at ``x``, as image fields."""
    fields: dict[str, Any] = {}
    if certificates.get("smoothing_label") is not None:
        predict_n = settings.attack_predict_n or settings.n
        found = certify.smoothing_attack(
            model,
            x,
            sigma=settings.sigma,
            label=certificates["smoothing_label"],
            alpha=settings.alpha,
            samples_per_step=settings.attack_samples_per_step,
            steps=settings.attack_steps,
            predict_n=predict_n,
            batch_size=settings.batch_size,
            seed=seed,
            # DDN's steps and twelve PREDICT runs, as the service's attack method plans them.
            max_queries=settings.attack_steps * settings.attack_samples_per_step + 12 * predict_n,
        )
        fields.update(
            smoothing_attack_label=found.label_found,
            smoothing_attack_distance=found.distance,
            smoothing_attack_queries=found.queries,
        )
    if certificates.get("margin_label") is not None:
        found = certify.margin_attack(
            model,
            x,
            ensemble=settings.ensemble,
            seed=settings.seed,
            attack_seed=seed,
            steps=settings.attack_steps,
            restarts=settings.attack_restarts,
        )
        fields.update(
            margin_attack_label=found.label_found,
            margin_attack_distance=found.distance,
            margin_attack_queries=found.queries,
        )
    return fields
