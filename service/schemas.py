"""The API's request and response bodies (pydantic v2); these are what ``/docs`` shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.imaging.description import InputDescription
from workers.certification import (
    CertificationMethod,
    CertificationParameters,
    CertificationReport,
    Seed,
)
from workers.jobs import BatchRecord, JobError, JobRecord, JobStatus
from workers.methods import DEFAULT_METHODS, REGISTRY
from workers.model_cache import LoadedModel, VersionDetail, VersionStatus


class CertifyOptions(BaseModel):
    """Optional certification parameters; the model's card and the settings fill the rest."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, description="model version; default: the latest")
    methods: tuple[CertificationMethod, ...] | None = Field(
        default=None,
        description="certificates to compute, in order (the first is the primary one); "
        f"default: {', '.join(DEFAULT_METHODS)}. "
        + " ".join(f"`{m.name}`: {m.summary}." for m in REGISTRY.values()),
    )
    sigma: float | None = Field(
        default=None, description="smoothing noise; one the model's card supports"
    )
    alpha: float | None = Field(default=None, description="failure probability, in (0, 0.5)")
    n0: int | None = Field(default=None, description="selection samples")
    n: int | None = Field(default=None, description="estimation samples (radius test: budget)")
    batch_size: int | None = Field(default=None, description="noisy samples per forward pass")
    ensemble: int | None = Field(default=None, description="frozen draws K of the margin's F_K")
    target_radius: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="L2 radius for the radius_test method"
    )
    seed: Seed | None = Field(
        default=None, description="a number or a string of digits (below 2**63); default: fresh"
    )

    strict: bool | None = Field(
        default=None,
        description="refuse (422 input_mismatch) an input that does not fit the model card's "
        "intended input, instead of answering with warnings; default: HYCAS_STRICT_INPUTS",
    )

    @field_validator(
        "sigma",
        "alpha",
        "n0",
        "n",
        "batch_size",
        "ensemble",
        "target_radius",
        mode="before",
    )
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        """``true`` is not a number here, although Python and pydantic would read it as 1."""
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _split_methods(cls, value: object) -> object:
        """Form fields send ``methods`` as one comma-separated string or repeated values."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(
                part.strip() if isinstance(part, str) else part
                for item in value
                for part in (item.split(",") if isinstance(item, str) else [item])
                if not isinstance(part, str) or part.strip()
            )
        return value


#: Exactly one of the two image forms, each with a value (``null`` counts as absent).
ONE_IMAGE_FORM = [
    {"required": ["image_base64"], "properties": {"image_base64": {"type": "string"}}},
    {"required": ["image"], "properties": {"image": {"type": "array"}}},
]


class InlineImage(BaseModel):
    """An image inside a JSON body: a base64 file, or a nested array of values in [0, 1]."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": ONE_IMAGE_FORM})

    image_base64: str | None = Field(default=None, description="a PNG/JPEG/NPY/DICOM file")
    image: list[Any] | None = Field(default=None, description="[H, W], [C, H, W] or [H, W, C]")
    filename: str | None = None


class CertifyRequest(CertifyOptions, InlineImage):
    """``POST /v1/certify`` as JSON."""

    model: str


class BatchRequest(CertifyOptions):
    """``POST /v1/batches`` as JSON: one model, shared parameters, many images."""

    model: str
    images: list[InlineImage] = Field(min_length=1)


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def _timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


class ModelReference(BaseModel):
    id: str
    version: str


class ProgressResource(BaseModel):
    samples_done: int
    samples_planned: int
    fraction: float


class JobResource(BaseModel):
    """A certification job: poll it until ``status`` is succeeded, failed or cancelled."""

    id: str
    url: str
    status: JobStatus
    model: ModelReference
    batch_id: str | None
    progress: ProgressResource
    parameters: CertificationParameters
    input: InputDescription
    warnings: tuple[str, ...]
    """How the input departs from what the model was made for, each a sentence (also in
    ``input.warnings`` and ``result.warnings``): known as soon as the job is created."""
    result: CertificationReport | None
    error: JobError | None
    cancel_requested: bool
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_record(cls, job: JobRecord) -> JobResource:
        planned = max(job.progress.samples_planned, 1)
        return cls(
            id=job.id,
            url=f"/v1/jobs/{job.id}",
            status=job.status,
            model=ModelReference(id=job.model_id, version=job.model_version),
            batch_id=job.batch_id,
            progress=ProgressResource(
                samples_done=job.progress.samples_done,
                samples_planned=job.progress.samples_planned,
                fraction=min(1.0, job.progress.samples_done / planned),
            ),
            parameters=job.parameters,
            input=job.input,
            warnings=job.input.warnings,
            result=job.result,
            error=job.error,
            cancel_requested=job.cancel_requested,
            attempts=job.attempts,
            created_at=_timestamp(job.created_at),
            started_at=_timestamp(job.started_at),
            finished_at=_timestamp(job.finished_at),
        )


class BatchItemResource(BaseModel):
    index: int
    filename: str | None
    job_id: str
    job: JobResource | None
    """``None`` once the job's record expired."""


class BatchResource(BaseModel):
    id: str
    url: str
    model: ModelReference
    status: str
    """``running`` while any item is queued or running, then ``finished``."""
    counts: dict[JobStatus, int]
    items: list[BatchItemResource]
    created_at: datetime

    @classmethod
    def from_records(cls, batch: BatchRecord, jobs: list[JobRecord | None]) -> BatchResource:
        counts = dict.fromkeys(JobStatus, 0)
        items = []
        for item, job in zip(batch.items, jobs, strict=True):
            if job is not None:
                counts[job.status] += 1
            items.append(
                BatchItemResource(
                    index=item.index,
                    filename=item.filename,
                    job_id=item.job_id,
                    job=None if job is None else JobResource.from_record(job),
                )
            )
        pending = counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING]
        return cls(
            id=batch.id,
            url=f"/v1/batches/{batch.id}",
            model=ModelReference(id=batch.model_id, version=batch.model_version),
            status="running" if pending else "finished",
            counts=counts,
            items=items,
            created_at=_timestamp(batch.created_at),
        )


class ModelVersionResource(BaseModel):
    """One version of a model: whether it serves requests, and what its card says of it."""

    id: str
    version: str
    status: Literal["available", "unavailable", "retired"]
    """``retired``: refused to new requests (404), jobs queued before still finish."""
    reason: str | None = None
    """Why an unavailable version cannot be used."""
    sha256: str | None = None
    created: str | None = None
    architecture: str | None = None
    lipschitz_bound: float | None = None
    metrics: dict[str, Any] | None = None
    """The card's test-split evaluation (clean and certified accuracy)."""
    retired_at: str | None = None
    retired_by: str | None = None
    """The SHA-256 prefix of the admin key that retired it."""

    @classmethod
    def from_detail(cls, detail: VersionDetail) -> ModelVersionResource:
        card = detail.card or {}
        retirement = detail.retirement
        return cls(
            id=detail.model_id,
            version=detail.version,
            status=detail.status,
            reason=detail.reason,
            sha256=card.get("sha256"),
            created=card.get("created"),
            architecture=card.get("architecture"),
            lipschitz_bound=card.get("lipschitz_bound"),
            metrics=card.get("metrics"),
            retired_at=None if retirement is None else retirement.retired_at,
            retired_by=None if retirement is None else retirement.retired_by,
        )


class ModelResource(BaseModel):
    """A model of the repository with its card."""

    id: str
    version: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    sigmas: tuple[float, ...]
    lipschitz_bound: float | None
    """``None`` for a network with no certified bound: smoothing only, margin refused."""
    sha256: str
    card: dict[str, Any]
    versions: list[ModelVersionResource] | None = None
    """``GET /v1/models/{id}``: every version, oldest first, with its status and metrics."""

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> ModelResource:
        return cls(
            id=loaded.model_id,
            version=loaded.version,
            input_shape=loaded.input_shape,
            class_names=loaded.class_names,
            sigmas=loaded.sigmas,
            lipschitz_bound=loaded.lipschitz_bound,
            sha256=loaded.sha256,
            card=loaded.card,
        )


class ModelVersionStatus(BaseModel):
    """One version of a model and whether it can be used (and why not)."""

    id: str
    version: str
    status: Literal["available", "unavailable", "retired"]
    """``retired``: it loads, but an administrator withdrew it from new requests."""
    reason: str | None = None
    """Why the version cannot be used: the integrity check or load step that failed."""

    @classmethod
    def from_status(cls, status: VersionStatus) -> ModelVersionStatus:
        return cls(
            id=status.model_id,
            version=status.version,
            status=status.status,
            reason=status.reason,
        )


class ModelList(BaseModel):
    models: list[ModelResource]
    """Each model at its default version: the newest one that loads."""
    unavailable: list[ModelVersionStatus] = []
    """Versions that fail to load, with the reason; requests for them get 503."""


class HealthResource(BaseModel):
    status: str
    mode: str | None = None
    detail: str | None = None
    models: list[ModelVersionStatus] | None = None
    """``/readyz``: every version of every model and whether it loads."""
