"""Reading certification requests: multipart uploads and JSON bodies, with bounded reads.

The body is counted while it streams in and reading stops at the limit (a lying or missing
``Content-Length`` changes nothing); each image is then held to ``max_upload_bytes``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.errors import (
    InvalidPackage,
    InvalidRequest,
    MalformedJSON,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedMediaType,
)
from service.job_inputs import ImageUpload
from service.schemas import BatchRequest, CertifyOptions, CertifyRequest, InlineImage

FORM_OVERHEAD_BYTES = 64 * 1024
"""Room in a request for the form fields and multipart boundaries around the images."""

_Request = TypeVar("_Request", bound=BaseModel)
"""A JSON request schema (:class:`CertifyRequest`, :class:`BatchRequest`)."""


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request is larger than {limit:,} bytes; send a smaller image")


async def read_body(request: Request, limit: int, timeout_seconds: float | None = None) -> bytes:
    """The whole body, refused (413) as soon as more than ``limit`` bytes arrived, and (408)
    when it has not arrived in full within ``timeout_seconds`` (a client that stalls)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks = []
    received = 0
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout_seconds:g} s ({received:,} bytes "
            "received); send it again"
        ) from None
    return b"".join(chunks)


def _check_image_size(size: int, limit: int, index: int | None) -> None:
    if size > limit:
        which = "the image" if index is None else f"image {index}"
        raise PayloadTooLarge(f"{which} is {size:,} bytes; the limit is {limit:,} bytes")


async def _one_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _invalid(error: ValidationError) -> InvalidRequest:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"])
        parts.append(f"{location or 'request'}: {item['msg']}")
    return InvalidRequest("; ".join(parts))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_form(
    request: Request,
    body_limit: int,
    timeout_seconds: float | None,
    max_files: int,
    too_many_files: ServiceError,
) -> tuple[dict[str, Any], dict[str, list[UploadFile]]]:
    """The form's text fields (repeated names as lists) and its files by field name, from a
    body of at most ``body_limit`` bytes that arrives within ``timeout_seconds``;
    ``too_many_files`` is raised when the form holds more than ``max_files`` files."""
    body = await read_body(request, body_limit, timeout_seconds)
    parser = MultiPartParser(request.headers, _one_chunk(body), max_files=max_files, max_fields=64)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if error.message.startswith("Too many files"):
            raise too_many_files from None
        raise InvalidRequest(f"the multipart body could not be read: {error.message}") from None
    fields: dict[str, Any] = {}
    files: dict[str, list[UploadFile]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.setdefault(name, []).append(value)
        elif name in fields:
            previous = fields[name]
            fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[name] = value
    return fields, files


async def _uploads_from_files(files: list[UploadFile], limit: int) -> list[ImageUpload]:
    uploads = []
    for index, file in enumerate(files):
        data = await file.read()
        _check_image_size(len(data), limit, index if len(files) > 1 else None)
        uploads.append(ImageUpload(data=data, array=None, filename=file.filename))
    return uploads


_DATA_URL_PREFIX = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def _base64_payload(text: str) -> str:
    """The base64 digits of ``text``: line breaks (MIME, GNU ``base64``) and spaces dropped,
    and a ``data:<type>;base64,`` URL prefix removed."""
    return _DATA_URL_PREFIX.sub("", _WHITESPACE.sub("", text), count=1)


def _upload_from_inline(image: InlineImage, limit: int, index: int | None) -> ImageUpload:
    if (image.image_base64 is None) == (image.image is None):
        where = "" if index is None else f"images.{index}: "
        raise InvalidRequest(f"{where}send exactly one of image_base64 and image")
    if image.image_base64 is None:
        return ImageUpload(data=None, array=image.image, filename=image.filename)
    _check_image_size(len(image.image_base64) * 3 // 4, limit, index)
    try:
        data = base64.b64decode(_base64_payload(image.image_base64), validate=True)
    except (binascii.Error, ValueError):
        where = "image_base64" if index is None else f"images.{index}.image_base64"
        raise InvalidRequest(f"{where} is not valid base64") from None
    _check_image_size(len(data), limit, index)
    return ImageUpload(data=data, array=None, filename=image.filename)


async def _read_json(
    request: Request, body_limit: int, timeout_seconds: float | None, schema: type[_Request]
) -> _Request:
    """The JSON body, of at most ``body_limit`` bytes arriving within ``timeout_seconds``,
    validated by ``schema`` (a refusal is :class:`InvalidRequest`)."""
    body = await read_body(request, body_limit, timeout_seconds)
    try:
        return schema.model_validate(_json(body))
    except ValidationError as error:
        raise _invalid(error) from None


def _json_options(parsed: CertifyRequest | BatchRequest) -> CertifyOptions:
    """The certification options a JSON request set (its other fields name the model and
    hold the images)."""
    return CertifyOptions.model_validate(
        parsed.model_dump(include=set(CertifyOptions.model_fields), exclude_unset=True)
    )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedJSON("the JSON body is nested too deeply to be read") from None
    except ValueError as error:
        # JSONDecodeError, UnicodeDecodeError, and integers too long to convert.
        raise MalformedJSON(f"the body is not valid JSON: {error}") from None


def _unsupported(media_type: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"Content-Type {media_type or '(none)'} is not accepted; send multipart/form-data "
        "or application/json"
    )


def _form_options(
    fields: dict[str, Any], files: dict[str, list[UploadFile]], names: tuple[str, ...]
) -> tuple[str, CertifyOptions]:
    model = fields.pop("model", None)
    if isinstance(model, list):
        raise InvalidRequest("the form has several 'model' fields; send exactly one")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("the form needs a 'model' field (a model id, e.g. digits-hycas)")
    as_text = sorted(set(fields) & set(names))
    if as_text:
        raise InvalidRequest(
            f"the form field {as_text[0]!r} was sent as text, not as a file; send the image "
            f"as a file part (with a filename), e.g. curl -F {as_text[0]}=@scan.dcm"
        )
    unknown = sorted((set(fields) | set(files)) - set(CertifyOptions.model_fields) - set(names))
    if unknown:
        raise InvalidRequest(
            f"unknown form field(s) {unknown}; files go in {' or '.join(names)}, parameters "
            f"are {sorted(CertifyOptions.model_fields)}"
        )
    try:
        return model, CertifyOptions.model_validate(fields)
    except ValidationError as error:
        raise _invalid(error) from None


async def parse_certify_request(
    request: Request, max_upload_bytes: int, timeout_seconds: float | None = None
) -> tuple[str, CertifyOptions, ImageUpload]:
    """``POST /v1/certify``: the model id, the options and the one image; the body must
    arrive within ``timeout_seconds``."""
    media_type = _media_type(request)
    body_limit = max_upload_bytes * 4 // 3 + FORM_OVERHEAD_BYTES
    if media_type == "multipart/form-data":
        one_file = InvalidRequest(
            "the form has more than one file; send one image in 'file' (several go to "
            "POST /v1/batches)"
        )
        fields, files = await _read_form(request, body_limit, timeout_seconds, 1, one_file)
        model, options = _form_options(fields, files, ("file",))
        if "file" not in files:
            raise InvalidRequest("the form needs the image in a 'file' field")
        (upload,) = await _uploads_from_files(files["file"], max_upload_bytes)
        return model, options, upload
    if media_type == "application/json":
        parsed = await _read_json(request, body_limit, timeout_seconds, CertifyRequest)
        upload = _upload_from_inline(parsed, max_upload_bytes, None)
        return parsed.model, _json_options(parsed), upload
    raise _unsupported(media_type)


async def parse_batch_request(
    request: Request,
    max_upload_bytes: int,
    max_images: int,
    max_batch_bytes: int,
    timeout_seconds: float | None = None,
) -> tuple[str, CertifyOptions, list[ImageUpload]]:
    """``POST /v1/batches``: the model id, the shared options and the images; the body must
    arrive within ``timeout_seconds``.

    The body is held to ``max_batch_bytes`` of images (4/3 of it for base64 in JSON) as well
    as to ``max_images`` images of ``max_upload_bytes`` each, whichever is smaller.
    """
    media_type = _media_type(request)
    image_bytes = min(max_images * max_upload_bytes, max_batch_bytes)
    body_limit = image_bytes * 4 // 3 + FORM_OVERHEAD_BYTES
    if media_type == "multipart/form-data":
        too_many = PayloadTooLarge(
            f"the batch has more than {max_images} images; the limit is {max_images}"
        )
        fields, files = await _read_form(
            request, body_limit, timeout_seconds, max_images + 1, too_many
        )
        model, options = _form_options(fields, files, ("files", "file"))
        images = files.get("files", []) + files.get("file", [])
        _check_image_count(len(images), max_images)
        uploads = await _uploads_from_files(images, max_upload_bytes)
        return model, options, _check_batch_bytes(uploads, max_batch_bytes)
    if media_type == "application/json":
        parsed = await _read_json(request, body_limit, timeout_seconds, BatchRequest)
        _check_image_count(len(parsed.images), max_images)
        uploads = [
            _upload_from_inline(image, max_upload_bytes, index)
            for index, image in enumerate(parsed.images)
        ]
        return parsed.model, _json_options(parsed), _check_batch_bytes(uploads, max_batch_bytes)
    raise _unsupported(media_type)


def _check_batch_bytes(uploads: list[ImageUpload], limit: int) -> list[ImageUpload]:
    total = sum(len(upload.data) for upload in uploads if upload.data is not None)
    if total > limit:
        raise PayloadTooLarge(
            f"the batch's images add up to {total:,} bytes; the limit is {limit:,} bytes "
            "(split it into several batches)"
        )
    return uploads


def _check_image_count(count: int, max_images: int) -> None:
    if count == 0:
        raise InvalidRequest("the batch has no images; send them in 'files' fields")
    if count > max_images:
        raise PayloadTooLarge(f"the batch has {count} images; the limit is {max_images}")


async def parse_package_upload(
    request: Request, max_bytes: int, timeout_seconds: float | None = None
) -> dict[str, bytes]:
    """``POST /v1/models``: the package's files by file name, from a multipart form whose
    file parts are ``model.json`` and its weights file, or one ``.tar``/``.tar.gz``/``.zip``
    of them (unpacked here); refused past ``max_bytes``."""
    from models.registration import PackageRefused, files_from_archive, is_archive

    media_type = _media_type(request)
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'} is not accepted; send the package as "
            "multipart/form-data (model.json and its weights, or one .tar or .zip of them)"
        )
    fields, parts = await _read_form(
        request,
        max_bytes + FORM_OVERHEAD_BYTES,
        timeout_seconds,
        8,
        InvalidRequest("a package is model.json and its weights: 2 files"),
    )
    if fields:
        raise InvalidRequest(
            f"unknown form field(s) {sorted(fields)}; send the package's files as file parts"
        )
    uploads = [upload for group in parts.values() for upload in group]
    files: dict[str, bytes] = {}
    for upload in uploads:
        name = (upload.filename or "").rsplit("/", 1)[-1]
        if not name:
            raise InvalidRequest("every file part needs a filename (model.json, …)")
        if name in files:
            raise InvalidRequest(f"the form holds two files named {name!r}")
        files[name] = await upload.read()
    if len(files) == 1 and is_archive(next(iter(files))):
        ((name, data),) = files.items()
        try:
            return files_from_archive(data, name, max_bytes)
        except PackageRefused as error:
            raise InvalidPackage(str(error)) from None
    if not files:
        raise InvalidRequest("the form holds no files: send model.json and its weights")
    return files
