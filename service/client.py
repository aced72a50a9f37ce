"""A Python client of the HyCAS Certify API: submit, poll, retry, read typed results.

It needs httpx only (no FastAPI, no torch), so a pipeline installs nothing else to use it::

    from service.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as client:
        result = client.certify("scan.dcm", "digits-hycas", n=10_000)
        print(result.prediction.class_name, result.certificates["smoothing"].radius)

Submissions refused with 429 (the backlog is full) or 503 (no worker or queue right now) are
retried after the server's ``Retry-After`` (else after an exponential backoff) up to
``max_retries`` times; every other refusal raises :class:`APIError` with the API's ``code``
and ``message``. A job that fails or is cancelled raises :class:`JobFailed`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger(__name__)

RETRIED_STATUSES = (429, 503)
"""Statuses a request is sent again after: the service is busy, not the request wrong."""
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")

ImageInput = str | Path | bytes | Any
"""A file path, the file's bytes, or an array of values in [0, 1] (anything with
``tolist()``, or nested lists): ``[H, W]``, ``[C, H, W]`` or ``[H, W, C]``."""


class APIError(Exception):
    """The API refused a request: its HTTP ``status``, stable ``code`` and ``message``."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class JobFailed(Exception):
    """A job ended without a result: ``failed`` (with the job's error) or ``cancelled``."""

    def __init__(self, job: Job) -> None:
        error = job.error or {}
        reason = error.get("message", "cancelled" if job.status == "cancelled" else job.status)
        super().__init__(f"job {job.id} {job.status}: {reason}")
        self.job = job
        self.code = error.get("code", job.status)
        self.message = reason


def _same_named_fields(cls: type, body: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``body`` named as the dataclass ``cls``'s fields (a ``KeyError`` names a
    missing one; other keys of the answer are left to ``raw``)."""
    return {member.name: body[member.name] for member in fields(cls)}


@dataclass(frozen=True)
class Certificate:
    """One certificate: the label it certifies (``None``: abstained) and its L2 radius, with
    the sentence saying what it guarantees."""

    method: str
    label: int | None
    class_name: str | None
    radius: float
    abstained: bool
    classifier: str
    guarantee: str
    details: Mapping[str, Any]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Certificate:
        return cls(**_same_named_fields(cls, {"details": {}, **body}))


@dataclass(frozen=True)
class AttackFinding:
    """What an attack (``methods=…,attack``) found on one classifier: an input with another
    answer at ``distance``, an upper bound on its true robust radius; never a certificate.
    ``distance`` is ``None`` when nothing was found, which is no evidence of robustness."""

    classifier: str
    label: int | None
    label_found: int | None
    class_name_found: str | None
    distance: float | None
    guarantee: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AttackFinding:
        return cls(**_same_named_fields(cls, body))


@dataclass(frozen=True)
class Prediction:
    """The primary certificate's answer (``label`` ``None`` when it abstains) and a note."""

    label: int | None
    class_name: str | None
    method: str
    note: str


@dataclass(frozen=True)
class Result:
    """A finished certification: the prediction, each certificate by method name, what an
    attack found (when asked for) and each bracket ``certified ≤ true robust radius ≤ found``
    as a sentence, the warnings about the input, and the whole JSON report (``raw``: input
    description, provenance)."""

    prediction: Prediction
    certificates: dict[str, Certificate]
    attacks: tuple[AttackFinding, ...]
    brackets: tuple[str, ...]
    warnings: tuple[str, ...]
    input_shape: tuple[int, ...]
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Result:
        prediction = body["prediction"]
        attack = body["certificates"].get("attack")
        findings = () if attack is None else (attack, *attack.get("other_classifiers", ()))
        return cls(
            prediction=Prediction(
                label=prediction["label"],
                class_name=prediction["class_name"],
                method=prediction["method"],
                note=prediction["note"],
            ),
            certificates={
                name: Certificate.from_json(value)
                for name, value in body["certificates"].items()
                if name != "attack"
            },
            attacks=tuple(AttackFinding.from_json(finding) for finding in findings),
            brackets=tuple(bracket["statement"] for bracket in body.get("brackets", ())),
            warnings=tuple(body.get("warnings", ())),
            input_shape=tuple(body["input_space"]["shape"]),
            raw=body,
        )


@dataclass(frozen=True)
class Job:
    """A job as the API last described it; ``result`` is set once it succeeded."""

    id: str
    status: str
    model: str
    version: str
    progress: float
    """Fraction of the planned model evaluations done, in [0, 1]."""
    result: Result | None
    error: Mapping[str, str] | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Job:
        return cls(
            id=body["id"],
            status=body["status"],
            model=body["model"]["id"],
            version=body["model"]["version"],
            progress=body["progress"]["fraction"],
            result=None if body.get("result") is None else Result.from_json(body["result"]),
            error=body.get("error"),
            raw=body,
        )


def _form_fields(model: str, params: Mapping[str, Any]) -> dict[str, str]:
    """The multipart text fields: the model and every parameter given (``None`` left out)."""
    fields = {"model": model}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        fields[name] = str(value)
    return fields


def _image_request(image: ImageInput, model: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``httpx`` keyword arguments of a ``POST /v1/certify``: a file as multipart, an array
    as JSON."""
    if isinstance(image, str | Path):
        path = Path(image)
        return {
            "files": {"file": (path.name, path.read_bytes())},
            "data": _form_fields(model, params),
        }
    if isinstance(image, bytes | bytearray):
        return {"files": {"file": ("image", bytes(image))}, "data": _form_fields(model, params)}
    values = image.tolist() if hasattr(image, "tolist") else image
    body = {name: value for name, value in params.items() if value is not None}
    return {"json": {"model": model, "image": values, **body}}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = (
            f"http_{response.status_code}",
            response.text[:500] or response.reason_phrase,
        )
    raise APIError(response.status_code, code, message, _retry_after(response))


@dataclass(frozen=True)
class RetryPolicy:
    """When an answer is worth sending the request again for: 429 or 503, after ``Retry-After``
    seconds (else ``backoff · 2^attempt``, at most ``max_backoff``), up to ``max_retries``."""

    max_retries: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``; ``None``: this answer stands."""
        if response.status_code not in RETRIED_STATUSES or attempt >= self.max_retries:
            return None
        delay = _retry_after(response)
        if delay is None:
            delay = min(self.max_backoff, self.backoff * 2**attempt)
        request = response.request
        logger.info(
            "event=retry method=%s path=%s status=%d attempt=%d delay_seconds=%.1f",
            request.method,
            request.url.path,
            response.status_code,
            attempt + 1,
            delay,
        )
        return delay


def _poll_intervals(first: float) -> Iterator[float]:
    """Seconds between polls of a job: ``first``, growing by half each time up to 2 s."""
    interval = first
    while True:
        yield interval
        interval = min(2.0, interval * 1.5)


class _JobWait:
    """One wait for a job: its deadline, the caller's ``progress`` and the poll schedule."""

    def __init__(
        self,
        job_id: str,
        first_interval: float,
        timeout: float | None,
        progress: Callable[[Job], None] | None,
    ) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.progress = progress
        self.intervals = _poll_intervals(first_interval)

    def pause_after(self, job: Job) -> float | None:
        """Seconds to wait before polling again after seeing ``job``; ``None`` once it has
        finished; ``TimeoutError`` past the deadline."""
        if self.progress is not None:
            self.progress(job)
        if job.finished:
            return None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(f"job {self.job_id} still {job.status} after {self.timeout:g} s")
        return next(self.intervals)


def _json_answer(response: httpx.Response) -> Any:
    """The JSON body of an answer that stands; :class:`APIError` when it is a refusal."""
    _raise_for_error(response)
    return response.json()


def _finished_result(job: Job) -> Result:
    if job.result is None:
        raise JobFailed(job)
    return job.result


class _Connection:
    """What both clients hold: the HTTP client of ``base_url`` (``api_key`` sent as
    ``X-API-Key`` when given), the retry policy and the first poll interval."""

    _http_class: type[httpx.Client] | type[httpx.AsyncClient]

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        poll_interval: float = 0.2,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        if api_key is not None and not api_key.isascii():
            raise ValueError("the API key has characters outside ASCII; keys are ASCII text")
        try:
            self._http = self._http_class(
                base_url=base_url.rstrip("/"), headers=headers, timeout=timeout
            )
        except httpx.InvalidURL as error:
            raise ValueError(f"{base_url!r} is not a server URL ({error})") from None
        self.retries = RetryPolicy(max_retries, backoff, max_backoff)
        self.poll_interval = poll_interval


class Client(_Connection):
    """The API at ``base_url`` (e.g. ``http://127.0.0.1:8000``), with ``api_key`` sent as
    ``X-API-Key`` when given.

    A request answered 429 or 503 is sent again after ``Retry-After`` seconds (else after
    ``backoff · 2^attempt``, at most ``max_backoff``), up to ``max_retries`` times; then its
    :class:`APIError` is raised. The client is safe to share between threads.
    """

    _http_class = httpx.Client
    _http: httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one request, retried on 429 and 503 as the class says."""
        for attempt in itertools.count():
            response = self._http.request(method, path, **kwargs)
            if (delay := self.retries.delay(response, attempt)) is None:
                return _json_answer(response)
            time.sleep(delay)
        raise AssertionError("unreachable: the attempts never end")

    def models(self) -> list[dict[str, Any]]:
        """Every model the service offers, each with its card (``GET /v1/models``)."""
        return self._request("GET", "/v1/models")["models"]

    def submit(self, image_or_path: ImageInput, model: str, **params: Any) -> Job:
        """Send one image to certify and return its job at once (queued or running).

        ``params`` are the API's options: ``methods`` (a list or comma-separated), ``sigma``,
        ``alpha``, ``n0``, ``n``, ``batch_size``, ``ensemble``, ``target_radius``, ``seed``,
        ``version``, ``strict``; those left out take the model card's and service's defaults.
        """
        return Job.from_json(
            self._request("POST", "/v1/certify", **_image_request(image_or_path, model, params))
        )

    def job(self, job_id: str) -> Job:
        """The job as it is now."""
        return Job.from_json(self._request("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        """Ask to cancel the job (queued: at once; running: at its next batch)."""
        return Job.from_json(self._request("DELETE", f"/v1/jobs/{job_id}"))

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job has finished (succeeded, failed or cancelled) and return it;
        ``TimeoutError`` after ``timeout`` seconds. ``progress`` sees each poll's job."""
        waiting = _JobWait(job_id, self.poll_interval, timeout, progress)
        while (pause := waiting.pause_after(job := self.job(job_id))) is not None:
            time.sleep(pause)
        return job

    def certify(
        self,
        image_or_path: ImageInput,
        model: str,
        *,
        wait: float | None = None,
        progress: Callable[[Job], None] | None = None,
        **params: Any,
    ) -> Result:
        """Certify one image and return its result, waiting at most ``wait`` seconds (``None``:
        as long as it takes); raises :class:`JobFailed` when the job fails or is cancelled,
        :class:`APIError` when the request is refused, ``TimeoutError`` after ``wait``.

        The result's radii are the service's certificates, each stating its guarantee; this
        client reports them as received and never changes a radius."""
        job = self.submit(image_or_path, model, **params)
        return _finished_result(self.wait(job.id, timeout=wait, progress=progress))

    def certify_batch(
        self,
        paths: Iterable[ImageInput],
        model: str,
        *,
        concurrency: int = 4,
        wait: float | None = None,
        **params: Any,
    ) -> list[Result | Exception]:
        """Certify each image (paths, or what :meth:`certify` takes) with at most
        ``concurrency`` jobs in flight at once; the list holds, in the order of ``paths``, each
        result or the exception that image raised
        (:class:`APIError`, :class:`JobFailed`, ``TimeoutError``, ``OSError``)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")

        def one(image: ImageInput) -> Result | Exception:
            try:
                return self.certify(image, model, wait=wait, **params)
            except (APIError, JobFailed, TimeoutError, OSError, httpx.HTTPError) as error:
                return error

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(one, list(paths)))


class AsyncClient(_Connection):
    """:class:`Client` for ``asyncio``: the same methods as coroutines, the same retries and
    errors; ``certify_batch`` keeps at most ``concurrency`` jobs in flight."""

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in itertools.count():
            response = await self._http.request(method, path, **kwargs)
            if (delay := self.retries.delay(response, attempt)) is None:
                return _json_answer(response)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the attempts never end")

    async def models(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/v1/models"))["models"]

    async def submit(self, image_or_path: ImageInput, model: str, **params: Any) -> Job:
        request = _image_request(image_or_path, model, params)
        return Job.from_json(await self._request("POST", "/v1/certify", **request))

    async def job(self, job_id: str) -> Job:
        return Job.from_json(await self._request("GET", f"/v1/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> Job:
        return Job.from_json(await self._request("DELETE", f"/v1/jobs/{job_id}"))

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        progress: Callable[[Job], None] | None = None,
    ) -> Job:
        waiting = _JobWait(job_id, self.poll_interval, timeout, progress)
        while (pause := waiting.pause_after(job := await self.job(job_id))) is not None:
            await asyncio.sleep(pause)
        return job

    async def certify(
        self,
        image_or_path: ImageInput,
        model: str,
        *,
        wait: float | None = None,
        progress: Callable[[Job], None] | None = None,
        **params: Any,
    ) -> Result:
        job = await self.submit(image_or_path, model, **params)
        return _finished_result(await self.wait(job.id, timeout=wait, progress=progress))

    async def certify_batch(
        self,
        paths: Iterable[ImageInput],
        model: str,
        *,
        concurrency: int = 4,
        wait: float | None = None,
        **params: Any,
    ) -> list[Result | Exception]:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        slots = asyncio.Semaphore(concurrency)

        async def one(image: ImageInput) -> Result | Exception:
            async with slots:
                try:
                    return await self.certify(image, model, wait=wait, **params)
                except (APIError, JobFailed, TimeoutError, OSError, httpx.HTTPError) as error:
                    return error

        return list(await asyncio.gather(*(one(image) for image in paths)))
