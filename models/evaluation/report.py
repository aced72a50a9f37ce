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

With attacks (``EvaluationSettings.attack``), each classifier also gets an EMPIRICAL robust
accuracy: at radius ``r``, the share of images where its certificate's answer is the true
label and a minimum-norm attack found no input with another answer closer than ``r``. An
attack only ever finds such inputs, so this is an upper bound on the true robust accuracy (of
F_K exactly; of g on the images where CERTIFY answers, PREDICT confirming each input found with
probability ``1 − alpha``), and the certified accuracy is a lower bound: together they bracket
it. Each image's ratio found / certified says how loose its certificate is at most.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
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
    attack: bool = False
    """Attack each classifier on every image its certificate answers (an upper bound)."""
    attack_steps: int = 100
    """DDN steps of each attack (``certify.margin_attack``, ``certify.smoothing_attack``)."""
    attack_restarts: int = 2
    """DDN starts of the attack on F_K."""
    attack_samples_per_step: int = 16
    """Noisy samples per DDN step of the attack on g."""
    attack_predict_n: int | None = None
    """Samples of each PREDICT run that checks the attack on g; ``None``: ``n``."""


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
    smoothing_attack_label: int | None = None
    """The answer of g at the input the attack on g found (``None``: found none)."""
    smoothing_attack_distance: float | None = None
    """Its L2 distance from the image, an upper bound on g's robust radius there."""
    smoothing_attack_queries: int | None = None
    """Model evaluations of the attack on g; ``None``: not attacked."""
    margin_attack_label: int | None = None
    margin_attack_distance: float | None = None
    margin_attack_queries: int | None = None

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

    def empirical_radius(self, certificate: str) -> float | None:
        """Up to where the certificate's classifier keeps the TRUE label against the attack: −1
        if its answer is wrong or it abstained, the distance of the input the attack found
        (robust at ``r`` only for ``r`` below it), ``inf`` if it found none; ``None`` when that
        classifier was not attacked."""
        if getattr(self, f"{certificate}_label") != self.label:
            return None if getattr(self, f"{certificate}_radius") is None else -1.0
        if getattr(self, f"{certificate}_attack_queries") is None:
            return None
        distance = getattr(self, f"{certificate}_attack_distance")
        return math.inf if distance is None else distance

    def found_over_certified(self, certificate: str) -> float | None:
        """The attack's distance over the certified radius, where the certificate answers with
        a positive radius and the attack found an input (``None`` otherwise)."""
        radius = getattr(self, f"{certificate}_radius")
        distance = getattr(self, f"{certificate}_attack_distance")
        if getattr(self, f"{certificate}_label") is None or not radius or distance is None:
            return None
        return distance / radius

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
class AttackSummary:
    """The attacks on one certificate's classifier over a dataset split."""

    certificate: str
    """``smoothing`` (the attack on g) or ``margin`` (the attack on F_K)."""
    attacked: int
    """Images attacked: those where the certificate answers."""
    found: int
    """Images where the attack found an input with another answer."""
    empirical_robust_accuracy: dict[str, float]
    """Radius → share of images answered correctly with no input of another answer found
    closer than it: an upper bound on the true robust accuracy."""
    found_over_certified: list[float]
    """Per image with a positive certified radius and an input found: distance / radius."""
    ratio_quartiles: tuple[float, float, float] | None
    """Lower quartile, median and upper quartile of ``found_over_certified``."""
    inside_certified: int
    """Inputs found closer than the certified radius: 0 unless a certificate or an attack is
    wrong (for g, or a 1 − alpha event)."""


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
    attacks: dict[str, AttackSummary] | None = None
    """Per certificate whose classifier was attacked; ``None`` without ``settings.attack``."""


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

    def attacks_run(self) -> tuple[str, ...]:
        return tuple(self.summary.attacks or ())

    def empirical_accuracy(self, certificate: str, radius: float) -> float:
        """Fraction of images correct with no input of another answer found within ``radius``."""
        return empirical_accuracy(self.images, certificate, radius)

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
                    "attacks": None
                    if summary.get("attacks") is None
                    else {
                        name: AttackSummary(
                            **{
                                **value,
                                "ratio_quartiles": None
                                if value["ratio_quartiles"] is None
                                else tuple(value["ratio_quartiles"]),
                            }
                        )
                        for name, value in summary["attacks"].items()
                    },
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


def empirical_accuracy(
    images: tuple[ImageCertificates, ...], certificate: str, radius: float
) -> float:
    """Fraction of ``images`` whose ``certificate`` answers the true label and whose attack
    found no input with another answer closer than ``radius`` (robust at ``r < distance``)."""
    hits = 0
    for image in images:
        empirical = image.empirical_radius(certificate)
        hits += empirical is not None and empirical > radius
    return hits / len(images)


def summarize_attack(
    images: tuple[ImageCertificates, ...], certificate: str, radii: tuple[float, ...]
) -> AttackSummary:
    """Empirical robust accuracy at ``radii`` and the ratios found / certified of the attacks
    on ``certificate``'s classifier."""
    ratios = [r for image in images if (r := image.found_over_certified(certificate)) is not None]
    quartiles = None
    if len(ratios) == 1:
        quartiles = (ratios[0], ratios[0], ratios[0])
    elif ratios:
        low, median, high = statistics.quantiles(ratios, n=4)
        quartiles = (low, median, high)
    distances = [getattr(image, f"{certificate}_attack_distance") for image in images]
    return AttackSummary(
        certificate=certificate,
        attacked=sum(getattr(i, f"{certificate}_attack_queries") is not None for i in images),
        found=sum(distance is not None for distance in distances),
        empirical_robust_accuracy={
            radius_key(r): empirical_accuracy(images, certificate, r) for r in (0.0, *radii)
        },
        found_over_certified=ratios,
        ratio_quartiles=quartiles,
        inside_certified=sum(ratio < 1 for ratio in ratios),
    )


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
    for name, attack in (summary.attacks or {}).items():
        values = [attack.empirical_robust_accuracy[r] for r in ["0", *radii]]
        lines.append(
            f"{name + ' attack':<29}" + "".join(f"{v:>9.4f}" for v in values) + "  (upper bound)"
        )
        if attack.ratio_quartiles is not None:
            low, median, high = attack.ratio_quartiles
            lines.append(
                f"  found / certified: median {median:.2f} (quartiles {low:.2f}–{high:.2f}, "
                f"{len(attack.found_over_certified)} images); found on {attack.found} of "
                f"{attack.attacked} attacked; inside a certified radius: {attack.inside_certified}"
            )
    return "\n".join(lines)
