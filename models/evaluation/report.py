"""What an evaluation measured: per-image certificates and their certified-accuracy summaries.

Certified accuracy at radius ``r`` is the fraction of images whose certificate returns the
TRUE label with a certified radius ``≥ r`` (abstentions and wrong labels count as failures);
the average certified radius (ACR) is the mean of that radius over images, 0 where the
certificate fails. "either" is NOT a certified accuracy: the smoothing and margin
certificates are about two different classifiers — the smoothed ``g`` (with probability
``1 − alpha``) and the frozen ensemble ``F_K`` (exactly) — and picking, per image, whichever
certifies more is a selection after the fact that certifies neither. "either" at ``r`` is the
share of images on which at least one of the two classifiers is certified correct at ``r``;
no single classifier the service runs has that accuracy.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CERTIFICATES = ("smoothing", "margin", "either")


@dataclass(frozen=True)
class EvaluationSettings:
    """Every parameter of an evaluation run."""

    sigma: float | None = None
    """Noise level of the smoothing certificate; ``None``: the model card's training sigma."""
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    batch_size: int = 1000
    ensemble: int = 16
    """Frozen draws K of the margin certificate's ``F_K`` (1 for a deterministic network)."""
    seed: int = 0
    """Seeds every image's smoothing run and the one ``F_K`` shared by all images."""
    radii: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    """Radii at which the summary reports certified accuracy."""
    smoothing: bool = True
    """Run the smoothing certificate (the expensive one: ``n0 + n`` forward passes per image)."""


@dataclass(frozen=True)
class ImageCertificates:
    """The certificates of one image; a radius of 0 with a ``None`` label is an abstention."""

    index: int
    label: int
    clean_prediction: int
    """The base classifier's class on the clean image, with a fresh draw of Ω."""
    smoothing_label: int | None = None
    smoothing_radius: float | None = None
    margin_label: int | None = None
    margin_radius: float | None = None

    def certified_radius(self, certificate: str) -> float | None:
        """The radius at which ``certificate`` certifies the TRUE label (−1 if it does not);
        ``None`` when the certificate was not run."""
        if certificate == "either":
            radii = [
                r for c in ("smoothing", "margin") if (r := self.certified_radius(c)) is not None
            ]
            return max(radii) if radii else None
        label = getattr(self, f"{certificate}_label")
        radius = getattr(self, f"{certificate}_radius")
        if radius is None:
            return None
        return radius if label == self.label else -1.0

    def abstained(self, certificate: str) -> bool:
        if certificate == "either":
            return self.abstained("smoothing") and self.margin_radius is None
        return getattr(self, f"{certificate}_radius") is not None and (
            getattr(self, f"{certificate}_label") is None
        )


@dataclass(frozen=True)
class CertificateSummary:
    """One certificate over a dataset split."""

    certificate: str
    accuracy: float
    """Fraction of images where the certificate returns the true label (radius 0)."""
    abstention_rate: float
    average_certified_radius: float
    certified_accuracy: dict[str, float]
    """Radius (as written, e.g. ``"0.5"``) → certified accuracy at that radius."""


@dataclass(frozen=True)
class EvaluationSummary:
    """The headline numbers of an evaluation (what a model card's ``metrics`` holds)."""

    dataset: str
    split: str
    images: int
    clean_accuracy: float
    """The base classifier on clean images, one fresh Ω per image."""
    ensemble_accuracy: float | None
    """The frozen ensemble ``F_K`` (the margin certificate's classifier); ``None`` if not run."""
    smoothed_accuracy: float | None
    """CERTIFY's label is the true one (abstentions count as errors); ``None`` if not run."""
    certificates: dict[str, CertificateSummary]
    lipschitz_bound: float | None
    settings: EvaluationSettings
    wall_seconds: float


@dataclass(frozen=True)
class EvaluationReport:
    """An evaluation: who was evaluated, its summary and every image's certificates."""

    model_id: str
    version: str
    sha256: str
    summary: EvaluationSummary
    images: tuple[ImageCertificates, ...]

    def certificates_run(self) -> tuple[str, ...]:
        return tuple(self.summary.certificates)

    def certified_accuracy(self, certificate: str, radius: float) -> float:
        """Fraction of images certified with the true label at ``radius`` or more."""
        return certified_accuracy(self.images, certificate, radius)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def write_json(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def read_json(cls, path: str | Path) -> EvaluationReport:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        summary = data["summary"]
        settings = dict(summary["settings"], radii=tuple(summary["settings"]["radii"]))
        return cls(
            model_id=data["model_id"],
            version=data["version"],
            sha256=data["sha256"],
            summary=EvaluationSummary(
                **{
                    **summary,
                    "certificates": {
                        name: CertificateSummary(**value)
                        for name, value in summary["certificates"].items()
                    },
                    "settings": EvaluationSettings(**settings),
                }
            ),
            images=tuple(ImageCertificates(**image) for image in data["images"]),
        )


def radius_key(radius: float) -> str:
    """How a radius is written as a key: ``0.5`` → ``"0.5"``."""
    return f"{radius:g}"


def certified_accuracy(
    images: tuple[ImageCertificates, ...], certificate: str, radius: float
) -> float:
    """Fraction of ``images`` whose ``certificate`` certifies the true label at ≥ ``radius``."""
    hits = 0
    for image in images:
        certified = image.certified_radius(certificate)
        hits += certified is not None and certified >= radius
    return hits / len(images)


def summarize_certificate(
    images: tuple[ImageCertificates, ...], certificate: str, radii: tuple[float, ...]
) -> CertificateSummary:
    """Accuracy, abstention rate, ACR and certified accuracy at ``radii`` of one certificate."""
    certified = [image.certified_radius(certificate) for image in images]
    if any(r is None for r in certified):
        raise ValueError(f"the {certificate} certificate was not run on every image")
    return CertificateSummary(
        certificate=certificate,
        accuracy=certified_accuracy(images, certificate, 0.0),
        abstention_rate=sum(image.abstained(certificate) for image in images) / len(images),
        average_certified_radius=sum(max(r, 0.0) for r in certified) / len(images),
        certified_accuracy={
            radius_key(r): certified_accuracy(images, certificate, r) for r in radii
        },
    )


def format_summary(summary: EvaluationSummary) -> str:
    """A plain-text table of the summary, for the terminal."""
    s = summary.settings
    lines = [
        f"{summary.dataset}/{summary.split}: {summary.images} images "
        f"(sigma {s.sigma:g}, n0 {s.n0}, n {s.n}, alpha {s.alpha:g}, ensemble K {s.ensemble})",
        f"clean accuracy {summary.clean_accuracy:.4f}"
        + (
            f" | smoothed {summary.smoothed_accuracy:.4f}"
            if summary.smoothed_accuracy is not None
            else ""
        )
        + (
            f" | frozen ensemble {summary.ensemble_accuracy:.4f}"
            if summary.ensemble_accuracy is not None
            else ""
        ),
    ]
    radii = [radius_key(r) for r in s.radii]
    lines.append(
        f"{'certificate':<12}{'abstain':>9}{'ACR':>8}"
        + "".join(f"{'r=' + r:>9}" for r in ["0", *radii])
    )
    for name, cert in summary.certificates.items():
        values = [cert.accuracy, *(cert.certified_accuracy[r] for r in radii)]
        lines.append(
            f"{name:<12}{cert.abstention_rate:>9.4f}{cert.average_certified_radius:>8.4f}"
            + "".join(f"{v:>9.4f}" for v in values)
        )
    return "\n".join(lines)
