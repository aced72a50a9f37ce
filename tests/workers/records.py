"""Job records for store and runner tests."""

from __future__ import annotations

import uuid

import numpy as np

from service.imaging.description import InputDescription
from workers.certification import DEFAULT_METHODS, CertificationParameters
from workers.jobs import JobRecord, Progress


def parameters(**overrides: object) -> CertificationParameters:
    values: dict[str, object] = {
        "methods": DEFAULT_METHODS,
        "sigma": 0.25,
        "alpha": 0.001,
        "n0": 16,
        "n": 200,
        "batch_size": 50,
        "ensemble": 1,
        "target_radius": None,
        "seed": 9,
    }
    values.update(overrides)
    return CertificationParameters(**values)


def job_record(model_id: str = "tiny-hycas", **overrides: object) -> JobRecord:
    job_id = uuid.uuid4().hex
    params = overrides.pop("parameters", parameters())
    values: dict[str, object] = {
        "id": job_id,
        "model_id": model_id,
        "model_version": "1",
        "parameters": params,
        "input": InputDescription(
            format="array",
            original_shape=(8, 8),
            shape=(1, 8, 8),
            transforms=(),
            sha256="0" * 64,
            tensor_sha256="1" * 64,
        ),
        "image_key": job_id,
        "progress": Progress(samples_planned=params.total_samples_planned),
    }
    values.update(overrides)
    return JobRecord(**values)


def image(value: float = 0.5) -> np.ndarray:
    return np.full((1, 8, 8), value, dtype=np.float32)
