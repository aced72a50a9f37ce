"""Outside classifiers: an ONNX graph behind the model protocol, certified by smoothing only.

A classifier trained elsewhere (PyTorch, TensorFlow, …) and exported to ONNX becomes a package
whose card says ``architecture: onnx`` and ``lipschitz_bound: null``: randomized smoothing and
the radius test need nothing but its forward pass (Cohen et al. 2019 certify any base
classifier), while the Lipschitz margin needs a certified bound it does not have and is
refused. A Lipschitz constant a user declares for the graph is never used: nothing here can
prove it.

The graph travels inside the package's safetensors file as one ``uint8`` tensor ``graph``
(its bytes), so the package is pinned by the card's SHA-256 and loaded, verified and mirrored
exactly as every other package. The graph must take one float32 input ``[B, C, H, W]``
(``B`` dynamic) and give one output ``[B, K]``; :func:`check_graph` refuses anything else with
a message that says what the graph has. The model applies ``(x − mean) · scale`` itself
before the graph, so radii are measured in the ``[0, 1]`` input space like every model's.

onnxruntime is an optional extra (``pip install hycas-certify[onnx]``); it runs the graph on
the CUDA execution provider for inputs on a CUDA device when that provider is installed, else
on the CPU one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.card import DatasetRecord, ModelCard, Normalization, TrainingRecord
from models.protocol import (
    CertifiableModel,
    DeterministicModel,
    describe_network,
)

ARCHITECTURE = "onnx"
GRAPH_TENSOR = "graph"
"""The name of the tensor holding the ONNX bytes in the package's safetensors file."""
TRIAL_BATCH = 2
"""Inputs of the trial run every graph passes on import and on load."""


class ONNXGraphError(ValueError):
    """The graph is not a classifier of ``[B, C, H, W]`` float32 to ``[B, K]``; says why."""


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ONNXGraphError(
            "ONNX models need onnxruntime: pip install 'hycas-certify[onnx]'"
        ) from None
    return onnxruntime


def _session(graph: bytes, cuda: bool) -> Any:
    runtime = _runtime()
    available = runtime.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return runtime.InferenceSession(graph, providers=providers)
    except Exception as error:  # onnxruntime raises its own classes for a bad graph
        raise ONNXGraphError(f"onnxruntime cannot load the graph: {error}") from None


def check_graph(graph: bytes, input_shape: Sequence[int], num_classes: int) -> None:
    """Refuse (:class:`ONNXGraphError`) a graph that is not one float32 input
    ``[B, C, H, W]`` with ``(C, H, W) = input_shape`` to one output ``[B, num_classes]``; a
    trial run on a batch of :data:`TRIAL_BATCH` checks the shapes the graph declares loosely."""
    session = _session(graph, cuda=False)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ONNXGraphError(
            f"the graph has {len(inputs)} inputs {names}; a classifier takes one, [B, C, H, W]"
        )
    if len(outputs) != 1:
        names = [o.name for o in outputs]
        raise ONNXGraphError(
            f"the graph has {len(outputs)} outputs {names}; a classifier gives one, [B, K]"
        )
    given, produced = inputs[0], outputs[0]
    if given.type != "tensor(float)":
        raise ONNXGraphError(f"the graph's input is {given.type}; it must be tensor(float)")
    wanted = [None, *input_shape]
    if not isinstance(given.shape, list) or len(given.shape) != 4:
        raise ONNXGraphError(f"the graph's input is {given.shape}; it must be [B, C, H, W]")
    if not isinstance(produced.shape, list) or len(produced.shape) != 2:
        raise ONNXGraphError(
            f"the graph's output is {produced.shape}; a classifier's logits are [B, K]"
        )
    for axis, (dim, want) in enumerate(zip(given.shape, wanted, strict=True)):
        if axis == 0 and isinstance(dim, int):
            raise ONNXGraphError(
                f"the graph's batch size is fixed to {dim}; export it with a dynamic batch axis "
                "(torch.onnx.export(..., dynamic_axes={'x': {0: 'batch'}, ...}))"
            )
        if axis > 0 and isinstance(dim, int) and dim != want:
            raise ONNXGraphError(
                f"the graph's input is {given.shape}; --input-shape says [B, "
                f"{', '.join(map(str, input_shape))}]"
            )
    trial = np.zeros((TRIAL_BATCH, *input_shape), dtype=np.float32)
    try:
        (logits,) = session.run(None, {given.name: trial})
    except Exception as error:  # onnxruntime's own error classes
        raise ONNXGraphError(f"the graph fails on a [B, C, H, W] input: {error}") from None
    if logits.shape != (TRIAL_BATCH, num_classes):
        raise ONNXGraphError(
            f"the graph maps a batch of {TRIAL_BATCH} to {list(logits.shape)}, not "
            f"[{TRIAL_BATCH}, {num_classes}] ({num_classes} classes)"
        )


class ONNXClassifier(DeterministicModel, nn.Module, CertifiableModel):
    """``x ↦ graph((x − mean) · scale)``: a deterministic classifier with no certified bound.

    As a :class:`models.protocol.CertifiableModel` it is not ``stochastic`` (``generator``,
    ``omega_seed`` and ``frozen`` have no effect) and ``lipschitz_bound()`` is ``None``, so it
    is certified by smoothing and the radius test only. Its one buffer, ``graph``, holds the
    ONNX bytes; loading a state dict takes a graph of any length and checks it.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        mean: Sequence[float],
        scale: Sequence[float],
    ) -> None:
        super().__init__()
        channels = int(input_shape[0])
        if len(mean) != channels or len(scale) != channels:
            raise ValueError(
                f"mean and scale need one value per channel ({channels}), got {len(mean)} "
                f"and {len(scale)}"
            )
        if not all(float(s) > 0 for s in scale):
            raise ValueError(f"every scale must be positive, got {list(scale)}")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.register_buffer("graph", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(-1, 1, 1))
        self._sessions: dict[tuple[int, bool], Any] = {}
        self._lock = threading.Lock()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        graph = state_dict.get(prefix + GRAPH_TENSOR)
        if graph is not None:
            # The graph's length is the package's, not the empty buffer's.
            check_graph(graph.numpy().tobytes(), self.input_shape, self.num_classes)
            self.graph = torch.empty_like(graph)
            self._sessions.clear()
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _session_for(self, cuda: bool) -> Any:
        key = (os.getpid(), cuda)  # a session is never used across a fork
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                if self.graph.numel() == 0:
                    raise RuntimeError("the ONNX classifier holds no graph; load its package")
                session = _session(self.graph.cpu().numpy().tobytes(), cuda)
                self._sessions[key] = session
            return session

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        prepared = ((x - self.mean) * self.scale).to(torch.float32)
        session = self._session_for(prepared.is_cuda)
        name = session.get_inputs()[0].name
        (logits,) = session.run(None, {name: prepared.detach().cpu().numpy()})
        return torch.from_numpy(logits).to(device=x.device, dtype=torch.float32)

    def normalization(self) -> Normalization:
        return Normalization(
            mean=tuple(float(v) for v in self.mean.flatten()),
            scale=tuple(float(v) for v in self.scale.flatten()),
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary in the shape of :meth:`models.HyCAS.describe` (no bound)."""
        normalization = self.normalization()
        config = {"mean": list(normalization.mean), "scale": list(normalization.scale)}
        return describe_network(self, ARCHITECTURE, config)


def build_onnx_classifier(
    input_shape: tuple[int, int, int], num_classes: int, **config: Any
) -> ONNXClassifier:
    """An :class:`ONNXClassifier` without its graph (its package's weights bring it); the
    config is ``mean`` and ``scale``, one value per channel."""
    unknown = sorted(set(config) - {"mean", "scale"})
    if unknown or not {"mean", "scale"} <= set(config):
        raise ValueError(f"an onnx config is mean and scale, got {sorted(config)}")
    return ONNXClassifier(input_shape, num_classes, config["mean"], config["scale"])


def parse_normalization(text: str | None, channels: int) -> Normalization:
    """``--normalization``: ``mean,std`` for every channel or ``m1,…,mC,s1,…,sC``; none: the
    identity (mean 0, scale 1)."""
    if text is None:
        return Normalization(mean=(0.0,) * channels, scale=(1.0,) * channels)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--normalization {text!r} is not numbers like 0.5,0.25") from None
    if len(values) == 2:
        values = [values[0]] * channels + [values[1]] * channels
    if len(values) != 2 * channels or not all(v > 0 for v in values[channels:]):
        raise ValueError(
            f"--normalization takes mean,std or {channels} means then {channels} positive "
            f"stds, got {text!r}"
        )
    return Normalization(
        mean=tuple(values[:channels]), scale=tuple(1.0 / s for s in values[channels:])
    )


def import_onnx(
    path: str | Path,
    *,
    model_id: str,
    input_shape: tuple[int, int, int],
    class_names: Sequence[str],
    sigma: float,
    normalization: Normalization,
    repository: str | Path,
    version: str | None = None,
) -> ModelCard:
    """Check the ONNX classifier at ``path`` and save it as a package of ``model_id`` in the
    local folder ``repository`` (``architecture: onnx``, ``lipschitz_bound: null``); returns
    its card. ``sigma`` is the noise level its smoothing certificates use: the classifier
    should have been trained with Gaussian noise of that level to certify anything."""
    from models.repository import save_model, sha256_hex

    graph = Path(path).read_bytes()
    if input_shape[0] not in (1, 3):
        raise ValueError(f"--input-shape takes 1 (grey) or 3 (RGB) channels, got {input_shape[0]}")
    if not sigma > 0:
        raise ValueError(f"--sigma must be positive, got {sigma}")
    model = ONNXClassifier(input_shape, len(class_names), normalization.mean, normalization.scale)
    model.load_state_dict(
        {
            GRAPH_TENSOR: torch.frombuffer(bytearray(graph), dtype=torch.uint8),
            "mean": model.mean,
            "scale": model.scale,
        }
    )
    digest = sha256_hex(graph)
    return save_model(
        model,
        model_id=model_id,
        class_names=class_names,
        sigma=sigma,
        dataset=DatasetRecord(
            name="unknown",
            source=f"an outside classifier: {Path(path).name} (ONNX, sha256 {digest})",
            train_split="unknown",
            train_size=0,
            test_split="unknown",
            test_size=0,
        ),
        training=TrainingRecord(
            command=f"hycas models import {Path(path).name} --model-id {model_id}",
            seed=0,
            settings={"onnx_sha256": digest},
            loss="unknown (trained outside HyCAS Certify)",
            final_loss=0.0,
            wall_seconds=0.0,
            device="unknown",
            torch_version=torch.__version__,
        ),
        metrics={},
        repository=repository,
        version=version,
    )
