"""Certification math: randomized smoothing, the Lipschitz margin certificate, sequential tests.

A plain library: no web server, no queue. It works with any classifier mapping a float batch
``[B, C, H, W]`` in ``[0, 1]`` to logits ``[B, K]``.
"""

from certify.attack import AttackResult, margin_attack, smoothing_attack
from certify.clopper_pearson import (
    clopper_pearson_interval,
    clopper_pearson_lower,
    clopper_pearson_upper,
)
from certify.margin import MarginCertificate, margin_certify, margin_radius
from certify.result import CertificationResult
from certify.sampling import (
    CancellationCheck,
    CertificationCancelled,
    ForwardPass,
    NoisyVoteSampler,
    ProgressCallback,
    is_stochastic,
    model_device,
    model_forward,
)
from certify.sequential import (
    RadiusDecision,
    RadiusTestResult,
    certify_at_radius,
    geometric_checkpoints,
)
from certify.smoothing import (
    SmoothingCertificate,
    SmoothingPrediction,
    gaussian_smoothing_radius,
    smoothing_certify,
    smoothing_predict,
)

__all__ = [
    "AttackResult",
    "CancellationCheck",
    "CertificationCancelled",
    "CertificationResult",
    "ForwardPass",
    "MarginCertificate",
    "NoisyVoteSampler",
    "ProgressCallback",
    "RadiusDecision",
    "RadiusTestResult",
    "SmoothingCertificate",
    "SmoothingPrediction",
    "certify_at_radius",
    "clopper_pearson_interval",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "gaussian_smoothing_radius",
    "geometric_checkpoints",
    "is_stochastic",
    "margin_attack",
    "margin_certify",
    "margin_radius",
    "model_device",
    "model_forward",
    "smoothing_attack",
    "smoothing_certify",
    "smoothing_predict",
]
