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
from workers.guarantees import bracket_statement, prediction_note
from workers.identity import worker_name
from workers.methods import DEFAULT_METHODS as DEFAULT_METHODS
from workers.methods import AttackOutcome, CertificationMethod, MethodCall, MethodOutcome, method
from workers.model_cache import LoadedModel
from workers.version import package_version


def _seed_from_text(value: object) -> object:
    """A seed sent as a string of ASCII digits is that integer; a boolean is no seed."""
    if isinstance(value, bool):
        raise ValueError("a seed is an integer or a string of digits, not a boolean")
    if isinstance(value, str):
        digits = value.strip()
        if not (digits.isascii() and digits.isdigit()):  # "²" and "٣" are digits to Python
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


class AttackFinding(BaseModel):
    """What a minimum-norm L2 attack found on one classifier: an input with another answer at
    ``distance``, an UPPER bound on the classifier's true robust radius at the image, or
    nothing. Never a certificate: it has no radius and is never the prediction."""

    classifier: str
    """The classifier attacked: ``smoothed`` g, or the ``frozen_ensemble`` F_K."""
    label: int | None
    """Its answer at the image, the one attacked (``None``: g abstained there)."""
    label_found: int | None
    """Its answer at the input found (``None``: nothing found)."""
    class_name_found: str | None
    distance: float | None
    """L2 distance (rounded up) of the input found from the image, in the space of
    ``input_space``; ``None`` when nothing was found, which is no evidence of robustness."""
    queries: int
    """Model evaluations the attack made (at most ``max_queries``)."""
    max_queries: int
    seconds: float
    stopped: str
    """``found``, ``not_found`` (every step ran), ``budget`` (query cap) or ``time_limit``."""
    guarantee: str
    details: dict[str, Any]
    """Every field of the library's result (``certify.AttackResult.to_dict()``); in JSON every
    seed is a string."""

    @field_serializer("details", when_used="json")
    def _details_with_seeds_as_text(self, details: dict[str, Any]) -> dict[str, Any]:
        return _seeds_as_text(details)


class AttackReport(AttackFinding):
    """``certificates.attack``: the attack on the classifier of the primary certificate (its
    fields), and the attacks on the other classifiers the job certifies."""

    method: CertificationMethod
    other_classifiers: list[AttackFinding] = []
    """The attack on each other classifier certified in the job (F_K beside g), same fields."""


class Bracket(BaseModel):
    """``certified ≤ true robust radius ≤ found`` for one classifier at one label: a
    certificate's radius below, an attack's distance above."""

    classifier: str
    method: CertificationMethod
    """The certificate giving the lower end."""
    label: int
    certified: float
    """The certificate's radius: a lower bound, with that certificate's guarantee."""
    found: float
    """The attack's distance: an upper bound (an input with another answer was found there)."""
    consistent: bool
    """``certified ≤ found``; ``False`` contradicts the certificate (see ``statement``)."""
    statement: str


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
    certificates: dict[CertificationMethod, Certificate | AttackReport]
    """Each method's outcome by name: a :class:`Certificate`, or for ``attack`` an
    :class:`AttackReport` (an upper bound, not a certificate)."""
    brackets: tuple[Bracket, ...] = ()
    """Where a certificate and an attack on the same classifier and label both have a bound."""
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
    deadline: float | None = None,
) -> CertificationReport:
    """Run each requested certificate on ``image`` (``[C, H, W]`` in ``[0, 1]``) and report.

    The prediction is the first requested certificate's answer, or none when it abstains
    (see :class:`Prediction`); ``description.warnings`` are the report's warnings.

    ``progress`` sees the samples of all certificates together; ``should_cancel`` is checked
    between batches and stops the run with ``certify.CertificationCancelled``. Library
    refusals (``ValueError``) propagate. Attacks run after the certificates, whatever the
    order requested, and stop before ``deadline`` (``time.monotonic()``) with what they found.
    """
    planned_total = parameters.total_samples_planned
    outcomes: dict[CertificationMethod, Certificate | AttackReport] = {}
    earlier: dict[str, MethodOutcome] = {}
    samples_before = 0
    started = time.perf_counter()
    certificates_first = sorted(parameters.methods, key=lambda name: not method(name).certifies)
    for name in certificates_first:
        registered = method(name)

        def report_progress(done: int, _planned: int, offset: int = samples_before) -> None:
            if progress is not None:
                progress(offset + done, planned_total)

        method_started = time.perf_counter()
        call = MethodCall(
            loaded, image, parameters, report_progress, should_cancel, dict(earlier), deadline
        )
        outcome = registered.run(call)
        if isinstance(outcome, AttackOutcome):
            outcomes[name] = _attack_report(name, outcome, loaded)
        else:
            outcomes[name] = Certificate(
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
            earlier[name] = outcome
        samples_before += registered.plans(parameters)
        if progress is not None:
            progress(samples_before, planned_total)

    certificates = {name: outcomes[name] for name in parameters.methods}
    primary, *others = (c for c in certificates.values() if isinstance(c, Certificate))
    attack = next((a for a in certificates.values() if isinstance(a, AttackReport)), None)
    return CertificationReport(
        prediction=Prediction(
            label=primary.label,
            class_name=primary.class_name,
            method=primary.method,
            classifier=primary.classifier,
            note=prediction_note(primary, earlier[primary.method].abstention_reason, others),
        ),
        warnings=description.warnings,
        certificates=certificates,
        brackets=() if attack is None else brackets(primary, others, attack),
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


def _attack_report(
    name: CertificationMethod, outcome: AttackOutcome, loaded: LoadedModel
) -> AttackReport:
    """``certificates.attack``: the first classifier's attack, the others beside it."""
    findings = [
        AttackFinding(
            classifier=result.classifier,
            label=result.label,
            label_found=result.label_found,
            class_name_found=loaded.class_name(result.label_found),
            distance=result.distance,
            queries=result.queries,
            max_queries=result.max_queries,
            seconds=result.seconds,
            stopped=result.stopped,
            guarantee=guarantee,
            details=result.to_dict(),
        )
        for result, guarantee in zip(outcome.attacks, outcome.guarantees, strict=True)
    ]
    first, *rest = findings
    return AttackReport(method=name, other_classifiers=rest, **dict(first))


def brackets(
    primary: Certificate, others: list[Certificate], attack: AttackReport
) -> tuple[Bracket, ...]:
    """One bracket per certificate with a label whose classifier was attacked at that label
    and an input with another answer found: ``certified ≤ true robust radius ≤ found``."""
    findings = [attack, *attack.other_classifiers]
    found = []
    for certificate in (primary, *others):
        for finding in findings:
            if (
                certificate.label is None
                or finding.distance is None
                or finding.classifier != certificate.classifier
                or finding.label != certificate.label
            ):
                continue
            found.append(
                Bracket(
                    classifier=certificate.classifier,
                    method=certificate.method,
                    label=certificate.label,
                    certified=certificate.radius,
                    found=finding.distance,
                    consistent=certificate.radius <= finding.distance,
                    statement=bracket_statement(
                        certificate.radius,
                        finding.distance,
                        certificate.method.value,
                        certificate.classifier,
                    ),
                )
            )
    return tuple(found)
