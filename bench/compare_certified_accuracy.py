"""Certified accuracy of several evaluated models side by side: a markdown table and one plot.

Reads the JSON reports that ``hycas evaluate`` writes and prints, per model and certificate,
the clean accuracy, the certificate's accuracy at radius 0, its abstention rate, its average
certified radius and its certified accuracy at the report radii; draws every curve in one PNG.

    python bench/compare_certified_accuracy.py \
        "HyCAS=docs/results/digits-hycas.json" "plain CNN=docs/results/digits-cnn.json" \
        --plot docs/results/digits_certified_accuracy.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.evaluation import EvaluationReport, plot_certified_accuracy


def markdown_table(reports: dict[str, EvaluationReport]) -> str:
    """One row per (model, certificate); radii are those of the first report."""
    radii = next(iter(reports.values())).summary.settings.radii
    radius_headers = " | ".join(f"r = {r:g}" for r in radii)
    lines = [
        f"| model | clean acc. | certificate | acc. (r = 0) | abstain | ACR | {radius_headers} |",
        "|---" * (6 + len(radii)) + "|",
    ]
    for label, report in reports.items():
        summary = report.summary
        for i, (name, cert) in enumerate(summary.certificates.items()):
            cells = [
                label if i == 0 else "",
                f"{summary.clean_accuracy:.3f}" if i == 0 else "",
                name,
                f"{cert.accuracy:.3f}",
                f"{cert.abstention_rate:.3f}",
                f"{cert.average_certified_radius:.3f}",
                *(f"{cert.certified_accuracy[f'{r:g}']:.3f}" for r in radii),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", metavar="LABEL=REPORT.json")
    parser.add_argument("--plot", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="digits test split (450 images)")
    args = parser.parse_args()
    reports = {}
    for item in args.reports:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"{item!r} is not LABEL=REPORT.json")
        reports[label] = EvaluationReport.read_json(path)
    print(markdown_table(reports))
    plot_certified_accuracy(reports, args.plot, title=args.title)
    print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
