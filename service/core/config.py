"""The gateway's settings: the execution settings plus the API's limits, keys and defaults.

Every field is read from the environment variable ``HYCAS_<NAME>`` (``HYCAS_API_KEYS`` takes
a comma-separated list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from workers.config import ExecutionSettings


class Settings(ExecutionSettings):
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    """Keys accepted in ``X-API-Key``; empty: the API is open. Comma-separated in the env."""
    admin_api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    """Keys that may also register and retire model versions (``POST /v1/models``, ``DELETE
    /v1/models/{id}/versions/{v}``); empty: nobody may. Comma-separated in the env."""
    max_model_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """Largest model package accepted by ``POST /v1/models`` (all its files, unpacked)."""
    log_level: str = "INFO"
    metrics_dir: Path | None = None
    """prometheus-client multiprocess folder shared by gateway and workers on one host."""

    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    """Largest image file accepted (counted while reading the request)."""
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    """Largest image (width × height of one frame) decoded."""
    max_batch_images: int = Field(default=64, ge=1)
    max_batch_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    """Largest batch request (all its images together, counted while reading)."""
    max_wait_seconds: float = Field(default=60.0, ge=0)
    """Longest ``wait=`` a request may ask for before the answer falls back to 202."""
    max_decode_bytes: int = Field(default=768 * 1024 * 1024, ge=1)
    """Memory all image decodes in flight may hold together (pixels × channels × bytes per
    sample at every stage); a decode waits for its share, one needing more is refused 413."""
    upload_timeout_seconds: float = Field(default=60.0, gt=0)
    """A request body not received in full within this time is answered 408; ``hycas serve``
    closes a connection whose request headers take longer."""
    max_connections: int = Field(default=1000, ge=1)
    """``hycas serve``: concurrent connections; beyond it new requests are answered 503."""
    keep_alive_seconds: int = Field(default=5, ge=1)
    """``hycas serve``: an idle keep-alive connection is closed after this time."""
    http_parser: Literal["auto", "httptools", "h11"] = "auto"
    """``hycas serve``: the HTTP/1.1 parser; ``auto`` takes httptools (C) when it is installed,
    else h11 (pure Python). Same behaviour, deadlines included; httptools costs less CPU."""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """``hycas serve``: the event loop; ``auto`` takes uvloop when it is installed (as it is
    with the package), else asyncio's."""

    max_n: int = Field(default=200_000, ge=1)
    max_n0: int = Field(default=10_000, ge=1)
    max_batch_size: int = Field(default=4_096, ge=1)
    max_ensemble: int = Field(default=64, ge=1)

    # A default certification of the digits model takes about a second on two CPU cores
    # (~10,000 noisy samples/s); n = 10,000 at alpha = 0.001 can certify up to 3.2 σ.
    default_n: int = Field(default=10_000, ge=1)
    default_n0: int = Field(default=100, ge=1)
    default_batch_size: int = Field(default=1_000, ge=1)
    default_alpha: float = Field(default=0.001, gt=0, lt=0.5)
    default_ensemble: int = Field(default=1, ge=1)
    strict_inputs: bool = False
    """Refuse (422 ``input_mismatch``) an input that does not fit the model card's intended
    input, instead of answering with warnings; a request's ``strict`` overrides it."""

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @property
    def distributed(self) -> bool:
        return self.redis_url is not None
