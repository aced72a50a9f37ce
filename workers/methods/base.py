"""What a certificate method is, and the registry the rest of the service reads.

A method is one object (:class:`Method`): its name, the classifier it is about, which job
parameters it reads and which it needs, how many model evaluations it plans, whether those are
noisy samples (counted in ``hycas_noisy_samples_total``), whether it needs a certified
Lipschitz bound, and how it runs. Everything else — the API's ``methods`` enum, the planned
progress, the request checks, the CLI's help, the metrics — is derived from the registry, so a
new method is one new module that defines a :class:`Method` and one :func:`register_method`
line in :mod:`workers.methods` (modelled on timm's ``register_model``). Reading the registry
imports no torch: a method's module imports the certification library inside ``run``, so the
command line and the API's schemas stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    import certify
    from workers.certification import CertificationParameters
    from workers.model_cache import LoadedModel


@dataclass(frozen=True)
class MethodOutcome:
    """What running a method gives: the certified label (``None``: it certifies none), the
    radius, the sentence that states what is guaranteed, the model evaluations it made and the
    library's full result."""

    label: int | None
    radius: float
    guarantee: str
    abstention_reason: str | None
    """Why no label is certified, in a few words (``None`` when one is)."""
    samples: int
    """Model evaluations made (noisy samples, or forward passes of frozen draws)."""
    result: certify.CertificationResult


@dataclass(frozen=True)
class AttackOutcome:
    """What running an attack method gives: per classifier attacked, the library's result and
    the sentence of what it shows. Upper bounds on robust radii, never a certificate."""

    attacks: tuple[certify.AttackResult, ...]
    guarantees: tuple[str, ...]
    samples: int
    """Model evaluations made by all the attacks together."""


@dataclass(frozen=True)
class MethodCall:
    """One method's run on one image: the model, the ``[C, H, W]`` image in ``[0, 1]``, the
    job's resolved parameters, and the progress and cancellation hooks of the job."""

    loaded: LoadedModel
    image: torch.Tensor
    parameters: CertificationParameters
    progress: certify.ProgressCallback
    should_cancel: certify.CancellationCheck | None
    earlier: Mapping[str, MethodOutcome] = field(default_factory=dict)
    """The outcomes of the job's certificate methods that ran before, by method name."""
    deadline: float | None = None
    """``time.monotonic()`` by which the job must end (``None``: no limit); a method that can
    stop early with a partial answer (an attack) stops before it."""

    def smoothing_options(self) -> dict[str, Any]:
        """The keyword arguments every smoothing run of the job takes: the job's σ, α, n0,
        batch size and seed, and its progress and cancellation hooks."""
        parameters = self.parameters
        return {
            "sigma": parameters.sigma,
            "alpha": parameters.alpha,
            "n0": parameters.n0,
            "batch_size": parameters.batch_size,
            "seed": parameters.seed,
            "progress": self.progress,
            "should_cancel": self.should_cancel,
        }


@dataclass(frozen=True)
class Method:
    """One certificate method, as the service knows it."""

    name: str
    """The value clients send in ``methods`` and the key of the result's ``certificates``."""
    classifier: str
    """The classifier its radius is about: ``smoothed`` (g) or ``frozen_ensemble`` (F_K);
    ``each_certified`` for an attack (the classifier of each certificate of the job)."""
    summary: str
    """One line for the API's and the CLI's help."""
    reads: tuple[str, ...]
    """The job parameters it reads (``sigma``, ``alpha``, ``n0``, ``n``, ``ensemble``, …)."""
    plans: Callable[[CertificationParameters], int]
    """Model evaluations it plans for the given parameters (the job's progress is their sum)."""
    run: Callable[[MethodCall], MethodOutcome | AttackOutcome]
    requires: tuple[str, ...] = ()
    """Parameters without a default that a request must set to use it (e.g. ``target_radius``)."""
    noisy_samples: bool = True
    """Its evaluations are noisy samples (counted in ``hycas_noisy_samples_total``)."""
    needs_lipschitz_bound: bool = False
    """Refused for a model whose card has no certified Lipschitz bound."""
    default: bool = False
    """Run when a request names no methods."""
    certifies: bool = True
    """Its outcome is a certificate (:class:`MethodOutcome`). ``False``: an attack
    (:class:`AttackOutcome`), which runs after the job's certificates, needs at least one of
    them, and is never the job's prediction."""


REGISTRY: dict[str, Method] = {}
"""Every registered method by name, in registration order (the order the API lists them)."""


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry; a second method of the same name is an error."""
    if method.name in REGISTRY:
        raise ValueError(f"a certificate method named {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


def certificate_outcome(
    result: Any, guarantee: str, samples: int, *, certified: bool = True
) -> MethodOutcome:
    """The outcome of a certificate whose result has a ``label`` and a ``radius`` (``None`` and
    0 when it abstains); ``certified=False`` reports neither, for a result that certifies no
    label although it names one (the sequential test's ``not_certified``)."""
    from workers.guarantees import abstention_reason

    return MethodOutcome(
        label=result.label if certified else None,
        radius=result.radius if certified else 0.0,
        guarantee=guarantee,
        abstention_reason=abstention_reason(result),
        samples=samples,
        result=result,
    )
