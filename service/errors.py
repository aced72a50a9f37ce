"""Every refusal the service makes: domain exceptions, each with its HTTP status and a stable
code as plain data.

Nothing here imports the web stack, so the image decoders and ``hycas certify`` raise them
without FastAPI; :mod:`service.api.errors` turns them into JSON responses.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal with an HTTP status, a stable machine-readable code and a human message.

    A subclass names its status and code in its header, so the refusals below read as a table:
    ``class NotFound(ServiceError, status_code=404, code="not_found")``.
    """

    status_code = 400
    code = "bad_request"

    def __init_subclass__(
        cls, *, status_code: int | None = None, code: str | None = None, **kwargs: object
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status_code is not None:
            cls.status_code = status_code
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class MalformedJSON(ServiceError, status_code=400, code="malformed_json"): ...


class MissingAPIKey(ServiceError, status_code=401, code="missing_api_key"): ...


class InvalidAPIKey(ServiceError, status_code=401, code="invalid_api_key"): ...


class Forbidden(ServiceError, status_code=403, code="forbidden"):
    """A valid key that may not do this (registering or retiring models needs an admin key)."""


class NotFound(ServiceError, status_code=404, code="not_found"): ...


class UnknownModel(ServiceError, status_code=404, code="unknown_model"): ...


class Conflict(ServiceError, status_code=409, code="conflict"): ...


class RequestTimeout(ServiceError, status_code=408, code="request_timeout"):
    """The body did not arrive in time; the answer closes the connection."""


class TooManyRequests(ServiceError, status_code=429, code="backlog_full"):
    """The backlog is full; ``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PayloadTooLarge(ServiceError, status_code=413, code="payload_too_large"): ...


class ImageTooLarge(ServiceError, status_code=413, code="image_too_large"): ...


class UnsupportedMediaType(ServiceError, status_code=415, code="unsupported_media_type"): ...


class MissingDICOMCodec(ServiceError, status_code=415, code="dicom_codec_missing"): ...


class InvalidRequest(ServiceError, status_code=422, code="invalid_request"): ...


class NotAnImage(ServiceError, status_code=422, code="not_an_image"): ...


class TruncatedImage(ServiceError, status_code=422, code="truncated_image"): ...


class InvalidImage(ServiceError, status_code=422, code="invalid_image"): ...


class UnsupportedSigma(ServiceError, status_code=422, code="unsupported_sigma"): ...


class ParameterOutOfBounds(ServiceError, status_code=422, code="parameter_out_of_bounds"): ...


class InvalidPackage(ServiceError, status_code=422, code="invalid_package"):
    """A model package that fails a registration check; nothing was stored."""


class InputMismatch(ServiceError, status_code=422, code="input_mismatch"):
    """Strict input checking refused an input that does not fit the model's card."""


class ServiceUnavailable(ServiceError, status_code=503, code="unavailable"): ...


class ModelUnavailable(ServiceUnavailable, code="model_unavailable"):
    """The model version exists but fails its integrity checks; the message says why."""


class QueueUnavailable(ServiceUnavailable, code="queue_unavailable"):
    """The job could not be handed to the queue (broker down or refusing)."""
