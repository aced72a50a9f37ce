"""Certified accuracy against radius, as a PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from models.evaluation.report import EvaluationReport

LINE_STYLES = {"smoothing": "-", "margin": "--", "either": ":"}
LEGEND_NAMES = {
    "smoothing": "smoothing (g)",
    "margin": "margin (F_K)",
    "either": "g or F_K certified (not one classifier)",
}


def radius_grid(reports: Mapping[str, EvaluationReport], points: int = 201) -> list[float]:
    """Radii from 0 to a little past the largest certified radius of any report."""
    largest = max(
        (
            radius
            for report in reports.values()
            for image in report.images
            for name in report.certificates_run()
            if (radius := image.certified_radius(name)) is not None
        ),
        default=0.0,
    )
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
    figure, axes = plt.subplots(figsize=(10.5 if many else 7.0, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, report) in enumerate(reports.items()):
        for j, name in enumerate(report.certificates_run()):
            axes.plot(
                radii,
                [report.certified_accuracy(name, r) for r in radii],
                linestyle=LINE_STYLES[name],
                color=colors[(i if len(reports) > 1 else j) % len(colors)],
                label=f"{label}: {LEGEND_NAMES[name]}" if len(reports) > 1 else LEGEND_NAMES[name],
            )
    axes.set_xlabel("L2 radius (input in [0, 1])")
    axes.set_ylabel("certified accuracy")
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
