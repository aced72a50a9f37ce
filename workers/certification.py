"""One image, one model, the requested certificates: what is asked, what comes back.

:func:`certify_image` is the single place that turns parameters into ``certify`` calls; the
job runner (queued jobs) and ``hycas certify`` (a file, no server) both use it. Every
certificate of a job replays from the job's one seed: each method is called with it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import torch
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_serializer,
)

import certify
from certify.seeds import SEED_BITS
from service.imaging.description import InputDescription
from workers.guarantees import prediction_note
from workers.identity import worker_name
from workers.methods import DEFAULT_METHODS as DEFAULT_METHODS
from workers.methods import CertificationMethod, MethodCall, method
from workers.model_cache import LoadedModel
from workers.version import package_version


def _seed_from_text(value: object) -> object:
    """A seed sent as a string of digits is that integer; a boolean is no seed."""
    if isinstance(value, bool):
        raise ValueError("a seed is an integer or a string of digits, not a boolean")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValueError(f"a seed is a non-negative integer, got {value!r}")
        return int(value)
    return value


Seed = Annotated[
    int,
    Field(ge=0, lt=2**SEED_BITS),
    BeforeValidator(_seed_from_text),
    # JavaScript reads JSON numbers as doubles (818635474839927637 becomes …700): a string.
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 2**SEED_BITS - 1},
                {"type": "string", "pattern": "^[0-9]{1,19}$"},
            ],
            "description": f"an integer below 2**{SEED_BITS}, as a number or a string of digits",
        },
        mode="validation",
    ),
]
"""A 63-bit seed: read from a number or a string of digits, written to JSON as a string."""


def _seeds_as_text(value: Any, key: str = "") -> Any:
    """``value`` with every seed (a key ``seed``/``*_seed``, or a list under ``*seeds``) as text."""
    if isinstance(value, dict):
        return {k: _seeds_as_text(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_seeds_as_text(v, key) for v in value]
    is_seed = key == "seed" or key.endswith(("_seed", "seeds"))
    if is_seed and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class CertificationParameters(BaseModel):
    """Every parameter of a job's certificates, resolved (no defaults left to fill in)."""

    model_config = ConfigDict(frozen=True)

    methods: tuple[CertificationMethod, ...]
    sigma: float
    alpha: float
    n0: int
    n: int
    """Estimation samples of CERTIFY; also the sample budget of the radius test."""
    batch_size: int
    ensemble: int
    """Frozen draws K of the margin certificate's ``F_K``."""
    target_radius: float | None
    seed: Seed
    """Seed of every certificate of the job (each method replays from it)."""

    def samples_planned(self, name: CertificationMethod) -> int:
        """Model evaluations the method ``name`` plans with these parameters."""
        return method(name).plans(self)

    @property
    def total_samples_planned(self) -> int:
        return sum(self.samples_planned(method) for method in self.methods)


class Certificate(BaseModel):
    """One certificate: the label it certifies (``None`` when abstaining) and its L2 radius."""

    method: CertificationMethod
    label: int | None
    class_name: str | None
    radius: float
    """Certified L2 radius in the input space of ``input_space``; 0 when abstaining."""
    abstained: bool
    classifier: str
    """Which classifier the radius is about: ``smoothed`` g, or the ``frozen_ensemble`` F_K."""
    guarantee: str
    samples: int
    """Model evaluations it made: noisy samples, or forward passes of frozen draws."""
    details: dict[str, Any]
    """Every field of the library's result (``to_dict()``): counts, bounds, seeds, parameters;
    in JSON every seed is a string, as ``Seed`` writes it."""
    seconds: float

    @field_serializer("details", when_used="json")
    def _details_with_seeds_as_text(self, details: dict[str, Any]) -> dict[str, Any]:
        return _seeds_as_text(details)


class Prediction(BaseModel):
    """The answer of the primary certificate (the first method requested), and only of it.

    When that certificate abstains, ``label`` is ``None`` and ``note`` says so: another
    certificate's label is never put in its place (it stays under ``certificates``, about its
    own classifier)."""

    label: int | None
    class_name: str | None
    method: CertificationMethod
    """The primary certificate: the first method requested."""
    classifier: str
    """The classifier answering: ``smoothed`` g or the ``frozen_ensemble`` F_K."""
    note: str
    """One or two sentences: whose answer this is, or why there is none, and any certificate
    that disagrees."""


class InputSpace(BaseModel):
    shape: tuple[int, int, int]
    value_range: tuple[float, float] = (0.0, 1.0)
    norm: str = "L2"


class ModelProvenance(BaseModel):
    id: str
    version: str
    sha256: str
    lipschitz_bound: float | None
    """``None`` for a network with no certified bound (certified by smoothing only)."""


class Timings(BaseModel):
    queue_wait_seconds: float | None
    model_load_seconds: float
    certification_seconds: float


class Provenance(BaseModel):
    """What is needed to reproduce the result."""

    model: ModelProvenance
    input_sha256: str
    tensor_sha256: str
    parameters: CertificationParameters
    seed: Seed
    package_version: str
    torch_version: str
    device: str
    host: str
    """The stable name of the worker that certified (``HYCAS_WORKER_NAME``), no process id."""
    timings: Timings


class CertificationReport(BaseModel):
    prediction: Prediction
    warnings: tuple[str, ...] = ()
    """How the input departs from what the model was made for (``input.warnings``): each
    sentence says why the answer may say nothing about the image sent."""
    certificates: dict[CertificationMethod, Certificate]
    input_space: InputSpace
    input: InputDescription
    provenance: Provenance


def certify_image(
    loaded: LoadedModel,
    image: torch.Tensor,
    parameters: CertificationParameters,
    description: InputDescription,
    *,
    progress: certify.ProgressCallback | None = None,
    should_cancel: certify.CancellationCheck | None = None,
    queue_wait_seconds: float | None = None,
) -> CertificationReport:
    """Run each requested certificate on ``image`` (``[C, H, W]`` in ``[0, 1]``) and report.

    The prediction is the first requested certificate's answer, or none when it abstains
    (see :class:`Prediction`); ``description.warnings`` are the report's warnings.

    ``progress`` sees the samples of all certificates together; ``should_cancel`` is checked
    between batches and stops the run with ``certify.CertificationCancelled``. Library
    refusals (``ValueError``) propagate.
    """
    planned_total = parameters.total_samples_planned
    certificates: dict[CertificationMethod, Certificate] = {}
    reasons: dict[CertificationMethod, str | None] = {}
    samples_before = 0
    started = time.perf_counter()
    for name in parameters.methods:
        registered = method(name)

        def report_progress(done: int, _planned: int, offset: int = samples_before) -> None:
            if progress is not None:
                progress(offset + done, planned_total)

        method_started = time.perf_counter()
        outcome = registered.run(
            MethodCall(loaded, image, parameters, report_progress, should_cancel)
        )
        certificates[name] = Certificate(
            method=name,
            label=outcome.label,
            class_name=loaded.class_name(outcome.label),
            radius=outcome.radius,
            abstained=outcome.label is None,
            classifier=registered.classifier,
            guarantee=outcome.guarantee,
            samples=outcome.samples,
            details=outcome.result.to_dict(),
            seconds=time.perf_counter() - method_started,
        )
        reasons[name] = outcome.abstention_reason
        samples_before += registered.plans(parameters)
        if progress is not None:
            progress(samples_before, planned_total)

    primary, *others = certificates.values()
    return CertificationReport(
        prediction=Prediction(
            label=primary.label,
            class_name=primary.class_name,
            method=primary.method,
            classifier=primary.classifier,
            note=prediction_note(primary, reasons[primary.method], others),
        ),
        warnings=description.warnings,
        certificates=certificates,
        input_space=InputSpace(shape=description.shape),
        input=description,
        provenance=Provenance(
            model=ModelProvenance(
                id=loaded.model_id,
                version=loaded.version,
                sha256=loaded.sha256,
                lipschitz_bound=loaded.lipschitz_bound,
            ),
            input_sha256=description.sha256,
            tensor_sha256=description.tensor_sha256,
            parameters=parameters,
            seed=parameters.seed,
            package_version=package_version(),
            torch_version=torch.__version__,
            device=loaded.device,
            host=worker_name(),
            timings=Timings(
                queue_wait_seconds=queue_wait_seconds,
                model_load_seconds=loaded.load_seconds,
                certification_seconds=time.perf_counter() - started,
            ),
        ),
    )
