"""The model card: everything a user and the certifier need to know about a packaged model.

A card is ``model.json`` beside ``model.safetensors`` in the model repository (see
:mod:`models.repository`). It states what the network is (architecture, config, input shape
and channel order, class names, normalisation, certified Lipschitz bound), what it was
trained for (the noise level ``sigma`` its smoothing certificates use, the inputs it was
made for: :class:`IntendedInput`), how it was made
(dataset and split, training command and seed) and how it measured (``metrics``), and it pins
the weights by their SHA-256.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Self

CARD_FORMAT = 1
"""Version of this card layout; a card with another ``card_format`` is refused."""


def _check_keys(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    unknown, missing = sorted(set(data) - names), sorted(required - set(data))
    if unknown or missing:
        raise ValueError(f"{where}: unknown field(s) {unknown}, missing field(s) {missing}")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _CardSection:
    """A section of the card that is its JSON object as is, once :func:`_check_keys` found
    every field and no other."""

    where: ClassVar[str]
    """Where the section stands in the card, for messages (``card.dataset``)."""

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        return cls(**_check_keys(cls, data, cls.where))


@dataclass(frozen=True)
class Normalization:
    """The input normalisation the model applies itself: ``y = (x − mean) · scale`` per channel.

    It happens inside the network (radii are measured on the ``[0, 1]`` input), so clients send
    unnormalised images; for HyCAS the certified bound covers it.
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def from_dict(cls, data: Any) -> Normalization:
        data = _check_keys(cls, data, "card.normalization")
        for name in ("mean", "scale"):
            if not (isinstance(data[name], list) and all(map(_is_number, data[name]))):
                raise ValueError(f"card.normalization.{name} must be a list of numbers")
        return cls(
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
        )


@dataclass(frozen=True)
class DatasetRecord(_CardSection):
    """The data a model was trained and measured on, with the recipes of its splits."""

    where: ClassVar[str] = "card.dataset"
    name: str
    source: str
    train_split: str
    train_size: int
    test_split: str
    test_size: int


@dataclass(frozen=True)
class TrainingRecord(_CardSection):
    """How the weights were made: the command that reproduces them and what it ran with."""

    where: ClassVar[str] = "card.training"
    command: str
    """The ``hycas train`` command line, every option explicit."""
    seed: int
    settings: dict[str, Any]
    """Every training setting (epochs, batch size, learning rate, loss terms, …)."""
    loss: str
    """The training objective, as a formula."""
    final_loss: float
    """Mean training loss over the last epoch."""
    wall_seconds: float
    device: str
    torch_version: str


CHANNEL_ORDERS = {1: "L", 3: "RGB"}
"""Channel order by channel count: one grey channel (Pillow's "L") or red, green, blue."""

MODALITY_CODE = re.compile(r"[A-Z0-9_]{1,16}")
"""A DICOM Modality (0008,0060) code: a Code String of at most 16 characters, e.g. ``CT``."""
COLOURS = {"grey": 1, "rgb": 3}
"""The colours an intended input may declare, with the channel count each needs."""


@dataclass(frozen=True)
class IntendedInput:
    """What the model was made for: every request is checked against it (see
    :mod:`service.input_fit`), and an input that departs from it gets a warning, or a refusal
    in strict mode."""

    kind: str
    """What the images show, as a noun phrase: ``handwritten digit``, ``chest X-ray``."""
    channels: int
    """1 or 3; the model's input channels."""
    native_size: tuple[int, int]
    """``(H, W)`` of the images the model was trained on, before any resizing."""
    colour: str
    """``grey`` or ``rgb``: what the training images were (a grey model may take 3 channels)."""
    modalities: tuple[str, ...] = ()
    """DICOM Modality codes the model was trained on (``CT``, ``DX``…); empty: no DICOM at all."""
    max_resize_factor: float = 2.0
    """The largest factor, along either axis, by which an input may differ from
    ``native_size`` before the answer is about another image than the one sent."""

    @classmethod
    def from_dict(cls, data: Any) -> IntendedInput:
        """An intended input from its JSON form; ``colour`` defaults to what ``channels`` says.

        Raises ``ValueError`` naming the field that is wrong."""
        where = "card.intended_input"
        if isinstance(data, dict) and "colour" not in data:
            # A wrong channel count is reported below, as such.
            data = {**data, "colour": "rgb" if data.get("channels") == 3 else "grey"}
        data = _check_keys(cls, data, where)
        kind, channels, size = data["kind"], data["channels"], data["native_size"]
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(f"{where}.kind must be a non-empty text, e.g. 'handwritten digit'")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"{where}.channels must be 1 or 3, got {channels!r}")
        if (
            not isinstance(size, list | tuple)
            or len(size) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in size)
        ):
            raise ValueError(f"{where}.native_size must be [H, W], two positive integers")
        colour = data["colour"]
        if colour not in COLOURS:
            raise ValueError(f"{where}.colour must be one of {sorted(COLOURS)}, got {colour!r}")
        if COLOURS[colour] > channels:
            raise ValueError(f"{where}: colour 'rgb' needs 3 channels, the card declares 1")
        modalities = data.get("modalities", ())
        if not isinstance(modalities, list | tuple) or not all(
            isinstance(m, str) and MODALITY_CODE.fullmatch(m) for m in modalities
        ):
            raise ValueError(
                f"{where}.modalities must be a list of DICOM Modality codes (upper-case, at most "
                f"16 characters, e.g. 'CT', 'DX'), got {modalities!r}"
            )
        factor = data.get("max_resize_factor", cls.max_resize_factor)
        if (
            not isinstance(factor, int | float)
            or isinstance(factor, bool)
            or not math.isfinite(factor)
            or factor < 1
        ):
            raise ValueError(f"{where}.max_resize_factor must be a number ≥ 1, got {factor!r}")
        return cls(
            kind=kind.strip(),
            channels=channels,
            native_size=(size[0], size[1]),
            colour=colour,
            modalities=tuple(modalities),
            max_resize_factor=float(factor),
        )


@dataclass(frozen=True)
class ModelCard:
    """The card of one model version (``model.json``)."""

    id: str
    version: str
    """A positive integer, as a string (the directory name)."""
    architecture: str
    """A key of :data:`models.architectures.ARCHITECTURES` (``hycas``, ``cnn`` or ``onnx``)."""
    config: dict[str, Any]
    """The architecture's config; ``build_model(architecture, input_shape, classes, config)``
    rebuilds the network the weights belong to."""
    input_shape: tuple[int, int, int]
    """``(C, H, W)`` of the float32 input in ``[0, 1]``; certified radii are L2 in this space."""
    channel_order: str
    """``L`` (one grey channel) or ``RGB``."""
    class_names: tuple[str, ...]
    sigma: float
    """The Gaussian noise level the model was trained with: the smoothing sigma it supports."""
    normalization: Normalization
    lipschitz_bound: float | None
    """Certified L2 bound of input → logits when saved (rounded up); ``None`` without one. A
    loaded model's re-certified bound must not exceed it."""
    dataset: DatasetRecord
    training: TrainingRecord
    metrics: dict[str, Any]
    """Measured on the test split: see :class:`models.evaluation.EvaluationSummary`."""
    sha256: str
    """SHA-256 of ``weights_file``."""
    created: str
    """UTC timestamp (ISO 8601) of packaging."""
    package_version: str
    """Version of hycas-certify that wrote the package."""
    intended_input: IntendedInput | None = None
    """What the model was made for; ``None`` in cards written before it was recorded (their
    inputs are checked only for what needs no card)."""
    weights_file: str = "model.safetensors"
    card_format: int = CARD_FORMAT

    def __post_init__(self) -> None:
        """Refuse values no model can have: a card with a NaN sigma or a channel order that
        is not its input's would be served, and fail every request, or mislead every reader."""
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"card.input_shape must be [C, H, W], got {list(self.input_shape)}")
        channels = self.input_shape[0]
        if CHANNEL_ORDERS.get(channels) != self.channel_order:
            raise ValueError(
                f"card.channel_order must be {CHANNEL_ORDERS.get(channels, 'L or RGB')!r} for "
                f"{channels} channel(s), got {self.channel_order!r}"
                if channels in CHANNEL_ORDERS
                else f"card.input_shape has {channels} channels; a model takes 1 (L) or 3 (RGB)"
            )
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError("card.class_names must name two or more classes, each once")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"card.sigma must be a finite number above 0, got {self.sigma}")
        bound = self.lipschitz_bound
        if bound is not None and not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"card.lipschitz_bound must be finite and above 0, got {bound}")
        for name, values in (
            ("mean", self.normalization.mean),
            ("scale", self.normalization.scale),
        ):
            if len(values) != channels or not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"card.normalization.{name} must hold {channels} finite number(s), got "
                    f"{list(values)}"
                )
        if min(self.normalization.scale) <= 0:
            raise ValueError("card.normalization.scale must be above 0 in every channel")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """A card from its JSON form; unknown or missing fields raise ``ValueError``."""
        data = _check_keys(cls, data, "card")
        if data.get("card_format", CARD_FORMAT) != CARD_FORMAT:
            raise ValueError(
                f"card format {data['card_format']} is not supported (this version reads "
                f"{CARD_FORMAT})"
            )
        bound = data["lipschitz_bound"]
        for name in ("sigma", *(() if bound is None else ("lipschitz_bound",))):
            if not _is_number(data[name]):
                raise ValueError(f"card.{name} must be a number, got {data[name]!r}")
        shape = data["input_shape"]
        if not (isinstance(shape, list) and len(shape) == 3 and all(map(_is_integer, shape))):
            raise ValueError(f"card.input_shape must be [C, H, W], three integers, got {shape!r}")
        intended = data.get("intended_input")
        if intended is not None:
            intended = IntendedInput.from_dict(intended)
            if intended.channels != int(data["input_shape"][0]):
                raise ValueError(
                    f"card.intended_input.channels is {intended.channels}, but the model takes "
                    f"{data['input_shape'][0]} channel(s)"
                )
        return cls(
            **{
                **data,
                "version": str(data["version"]),
                "input_shape": tuple(int(d) for d in data["input_shape"]),
                "class_names": tuple(str(c) for c in data["class_names"]),
                "sigma": float(data["sigma"]),
                "lipschitz_bound": None if bound is None else float(bound),
                "normalization": Normalization.from_dict(data["normalization"]),
                "dataset": DatasetRecord.from_dict(data["dataset"]),
                "training": TrainingRecord.from_dict(data["training"]),
                "intended_input": intended,
            }
        )
