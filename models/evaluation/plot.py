"""Certified accuracy against radius, as a PNG (matplotlib, Agg backend: no display needed).

With attacks, each attacked classifier also gets its empirical robust accuracy (an upper
bound, in the colour of its certificate, dash-dotted) and a second panel plots each image's
attack distance against its certified radius: every point lies on or above the diagonal, and
its height over it is the ratio found / certified.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from models.evaluation.report import EvaluationReport

LINE_STYLES = {"smoothing": "-", "margin": "--", "either": ":"}
ATTACK_STYLE = "-."
LEGEND_NAMES = {
    "smoothing": "smoothing (g)",
    "margin": "margin (F_K)",
    "either": "g or F_K certified (not one classifier)",
}


def radius_grid(reports: Mapping[str, EvaluationReport], points: int = 201) -> list[float]:
    """Radii from 0 to a little past the largest certified radius or attack distance."""
    radii = [
        radius
        for report in reports.values()
        for image in report.images
        for name in report.certificates_run()
        if (radius := image.certified_radius(name)) is not None
    ]
    distances = [
        distance
        for report in reports.values()
        for image in report.images
        for name in report.attacks_run()
        if (distance := getattr(image, f"{name}_attack_distance")) is not None
    ]
    largest = max([*radii, *distances], default=0.0)
    top = max(1.05 * largest, max(max(r.summary.settings.radii) for r in reports.values()))
    return [top * i / (points - 1) for i in range(points)]


def plot_certified_accuracy(
    reports: Mapping[str, EvaluationReport], path: str | Path, *, title: str
) -> Path:
    """One curve per (report, certificate): certified accuracy against L2 radius. Colours tell
    the reports apart (the certificates, for a single report), line styles the certificates."""
    if not reports:
        raise ValueError("no reports to plot")
    radii = radius_grid(reports)
    many = len(reports) > 2  # a legend inside the axes would hide curves
    attacked = any(report.attacks_run() for report in reports.values())
    width = (10.5 if many else 7.0) + (4.5 if attacked else 0.0)
    figure, all_axes = plt.subplots(
        1, 2 if attacked else 1, figsize=(width, 4.5), dpi=120, squeeze=False
    )
    axes = all_axes[0][0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, report) in enumerate(reports.items()):
        prefix = f"{label}: " if len(reports) > 1 else ""
        for j, name in enumerate(report.certificates_run()):
            color = colors[(i if len(reports) > 1 else j) % len(colors)]
            axes.plot(
                radii,
                [report.certified_accuracy(name, r) for r in radii],
                linestyle=LINE_STYLES[name],
                color=color,
                label=prefix + LEGEND_NAMES[name],
            )
            if name in report.attacks_run():
                axes.plot(
                    radii,
                    [report.empirical_accuracy(name, r) for r in radii],
                    linestyle=ATTACK_STYLE,
                    color=color,
                    alpha=0.8,
                    label=f"{prefix}{LEGEND_NAMES[name]} under attack (upper bound)",
                )
    if attacked:
        _plot_found_against_certified(all_axes[0][1], reports, colors)
    axes.set_xlabel("L2 radius (input in [0, 1])")
    axes.set_ylabel("certified accuracy" + (" / accuracy under attack" if attacked else ""))
    axes.set_ylim(0.0, 1.0)
    axes.set_xlim(0.0, radii[-1])
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=10)
    if many:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        axes.legend(fontsize=8)
    figure.tight_layout()
    output = Path(path)
    figure.savefig(output, format="png")
    plt.close(figure)
    return output


def _plot_found_against_certified(
    axes: plt.Axes, reports: Mapping[str, EvaluationReport], colors: list[str]
) -> None:
    """Each image's attack distance against its certified radius, per attacked classifier."""
    top = 0.0
    for i, (label, report) in enumerate(reports.items()):
        for j, name in enumerate(report.attacks_run()):
            points = [
                (getattr(image, f"{name}_radius"), getattr(image, f"{name}_attack_distance"))
                for image in report.images
                if image.found_over_certified(name) is not None
            ]
            if not points:
                continue
            quartiles = report.summary.attacks[name].ratio_quartiles  # type: ignore[index]
            median = "" if quartiles is None else f", median ratio {quartiles[1]:.2f}"
            prefix = f"{label}: " if len(reports) > 1 else ""
            axes.scatter(
                [p[0] for p in points],
                [p[1] for p in points],
                s=8,
                alpha=0.6,
                color=colors[(i if len(reports) > 1 else j) % len(colors)],
                label=f"{prefix}{LEGEND_NAMES[name]}{median}",
            )
            top = max(top, *(max(p) for p in points))
    top = 1.05 * top or 1.0
    axes.plot([0, top], [0, top], color="black", linewidth=0.8, label="found = certified")
    axes.set_xlim(0.0, top)
    axes.set_ylim(0.0, top)
    axes.set_xlabel("certified radius")
    axes.set_ylabel("distance of the input the attack found")
    axes.set_title("per image: found / certified ≥ 1", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
