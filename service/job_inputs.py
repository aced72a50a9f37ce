"""What a certification job is made of: its parameters, resolved from the request's options
and the model's card, and its image, decoded to the model's input and held to the card.

The gateway's :class:`service.job_service.JobService` and ``hycas certify`` (a file, no server)
both build jobs here; nothing here imports the web stack (FastAPI, Starlette).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from certify.seeds import fresh_seed
from certify.validation import MIN_ALPHA
from service.core.config import Settings
from service.decode_budget import DecodeBudget
from service.errors import InvalidRequest, ParameterOutOfBounds, UnsupportedSigma
from service.imaging import DecodedImage, decode_array, decode_image
from service.input_fit import check_input_fit
from service.schemas import CertifyOptions
from workers.certification import CertificationParameters
from workers.methods import DEFAULT_METHODS, REGISTRY, CertificationMethod, method
from workers.model_cache import LoadedModel


@dataclass(frozen=True)
class ImageUpload:
    """One image as received: file bytes, or a nested array from JSON."""

    data: bytes | None
    array: list[Any] | None
    filename: str | None


def _bounded(name: str, requested: int | None, default: int, upper: int, setting: str) -> int:
    value = default if requested is None else requested
    if not 1 <= value <= upper:
        raise ParameterOutOfBounds(
            f"{name}={value} is out of bounds; it must lie in [1, {upper:,}] ({setting})"
        )
    return value


def require_method_options(
    methods: Sequence[CertificationMethod], options: CertifyOptions, loaded: LoadedModel
) -> None:
    """Refuse (422) a method whose required option is missing, or that needs a certified
    Lipschitz bound the model does not have, and an attack requested without a certificate
    (it brackets one, and is never the prediction); what each method needs is in its
    registration."""
    attacks = [name for name in methods if not method(name).certifies]
    if attacks and len(attacks) == len(methods):
        certificates = ", ".join(m.name for m in REGISTRY.values() if m.certifies)
        raise InvalidRequest(
            f"the {attacks[0]} method gives an upper bound beside a certificate, never an answer "
            f"of its own: request it with one of {certificates}"
        )
    for name in methods:
        registered = method(name)
        for option in registered.requires:
            if getattr(options, option) is None:
                what = CertifyOptions.model_fields[option].description
                raise InvalidRequest(f"the {name} method needs {option} ({what})")
        if registered.needs_lipschitz_bound and loaded.lipschitz_bound is None:
            raise InvalidRequest(
                f"the {name} method needs a certified Lipschitz bound, and {loaded.model_id} "
                f"v{loaded.version} has no certified Lipschitz bound; use smoothing or "
                "radius_test",
                code="no_lipschitz_bound",
            )


def default_methods(loaded: LoadedModel) -> tuple[CertificationMethod, ...]:
    """The default methods the model can run: a model without a certified Lipschitz bound
    gets the sampling ones only (a request that names margin is still refused, with why)."""
    if loaded.lipschitz_bound is not None:
        return DEFAULT_METHODS
    return tuple(m for m in DEFAULT_METHODS if not method(m).needs_lipschitz_bound)


def resolve_parameters(
    options: CertifyOptions, loaded: LoadedModel, settings: Settings
) -> CertificationParameters:
    """The options completed with the card's sigma and the defaults, held to the bounds."""
    methods = options.methods or default_methods(loaded)
    if len(set(methods)) != len(methods):
        raise InvalidRequest(f"methods lists a method twice: {[m.value for m in methods]}")
    sigma = loaded.sigmas[0] if options.sigma is None else options.sigma
    if sigma not in loaded.sigmas:
        raise UnsupportedSigma(
            f"sigma={sigma:g} is not supported by {loaded.model_id} v{loaded.version}; "
            f"its card supports {', '.join(f'{s:g}' for s in loaded.sigmas)}"
        )
    alpha = settings.default_alpha if options.alpha is None else options.alpha
    if not MIN_ALPHA <= alpha < 0.5:
        raise ParameterOutOfBounds(
            f"alpha={alpha:g} is out of bounds; it must lie in [{MIN_ALPHA:g}, 0.5)"
        )
    require_method_options(methods, options, loaded)
    target_radius = options.target_radius
    return CertificationParameters(
        methods=tuple(methods),
        sigma=sigma,
        alpha=alpha,
        n0=_bounded("n0", options.n0, settings.default_n0, settings.max_n0, "HYCAS_MAX_N0"),
        n=_bounded("n", options.n, settings.default_n, settings.max_n, "HYCAS_MAX_N"),
        batch_size=_bounded(
            "batch_size",
            options.batch_size,
            settings.default_batch_size,
            settings.max_batch_size,
            "HYCAS_MAX_BATCH_SIZE",
        ),
        ensemble=_bounded(
            "ensemble",
            options.ensemble,
            settings.default_ensemble,
            settings.max_ensemble,
            "HYCAS_MAX_ENSEMBLE",
        ),
        target_radius=target_radius,
        seed=fresh_seed() if options.seed is None else options.seed,
    )


def strict_inputs(options: CertifyOptions, settings: Settings) -> bool:
    """Whether an input that does not fit the model's card is refused: the request's
    ``strict``, else ``HYCAS_STRICT_INPUTS``."""
    return settings.strict_inputs if options.strict is None else options.strict


def decode_upload(
    upload: ImageUpload,
    loaded: LoadedModel,
    max_pixels: int,
    *,
    strict: bool = False,
    budget: DecodeBudget | None = None,
) -> DecodedImage:
    """The uploaded file or JSON array as the model's input, with the warnings of how it fits
    the model's card (:mod:`service.input_fit`); with ``strict``, a misfit is a 422. A file
    or array is decoded under the memory ``budget`` shared with concurrent requests."""
    if upload.data is not None:
        decoded = decode_image(
            upload.data, loaded.input_shape, max_pixels=max_pixels, budget=budget
        )
    else:
        decoded = decode_array(
            upload.array, loaded.input_shape, max_pixels=max_pixels, budget=budget
        )
    return check_input_fit(decoded, loaded, strict=strict)
