"""Evaluation: clean and certified accuracy of a model on a dataset split, as JSON and a plot."""

from models.evaluation.command import EvaluationOutput, evaluate_package, write_report
from models.evaluation.evaluate import clean_predictions, evaluate_classifier, has_lipschitz_bound
from models.evaluation.plot import plot_certified_accuracy
from models.evaluation.report import (
    CERTIFICATES,
    CertificateSummary,
    EvaluationReport,
    EvaluationSettings,
    EvaluationSummary,
    ImageCertificates,
    certified_accuracy,
    format_summary,
    summarize_certificate,
)

__all__ = [
    "CERTIFICATES",
    "CertificateSummary",
    "EvaluationOutput",
    "EvaluationReport",
    "EvaluationSettings",
    "EvaluationSummary",
    "ImageCertificates",
    "certified_accuracy",
    "clean_predictions",
    "evaluate_classifier",
    "evaluate_package",
    "format_summary",
    "has_lipschitz_bound",
    "plot_certified_accuracy",
    "summarize_certificate",
    "write_report",
]
