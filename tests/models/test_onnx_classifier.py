"""An outside classifier exported with ``torch.onnx.export``: imported as an ``onnx`` package
(no Lipschitz bound), certified by smoothing exactly as the PyTorch model it came from; graphs
that are not ``[B, C, H, W] → [B, K]`` are refused at import with a message saying why."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import certify
import models
from models.card import Normalization
from models.onnx_classifier import ONNXGraphError, check_graph, import_onnx, parse_normalization

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPE = (1, 8, 8)
CLASSES = ["zero", "one", "two"]


def small_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    ).eval()


def export(module: nn.Module, inputs: tuple[torch.Tensor, ...], **options) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(module, inputs, buffer, dynamo=False, **options)
    return buffer.getvalue()


def export_classifier(module: nn.Module) -> bytes:
    return export(
        module,
        (torch.zeros(1, *SHAPE),),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
    )


def test_an_onnx_model_certifies_by_smoothing_like_the_pytorch_model(tmp_path: Path):
    cnn = small_cnn()
    (tmp_path / "cnn.onnx").write_bytes(export_classifier(cnn))
    identity = parse_normalization(None, 1)
    card = import_onnx(
        tmp_path / "cnn.onnx",
        model_id="outside-cnn",
        input_shape=SHAPE,
        class_names=CLASSES,
        sigma=0.5,
        normalization=identity,
        repository=tmp_path / "repository",
    )
    assert (card.architecture, card.lipschitz_bound) == ("onnx", None)
    wrapped, _ = models.load("outside-cnn", repository=tmp_path / "repository")
    assert wrapped.lipschitz_bound() is None and wrapped.stochastic is False
    x = torch.rand(*SHAPE, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="not both"):  # the protocol's rule, as every network
        wrapped(x[None], generator=torch.Generator(), omega_seed=1)
    options = {"sigma": 0.5, "n0": 50, "n": 2_000, "batch_size": 500, "seed": 11}
    original = certify.smoothing_certify(cnn, x, **options)
    imported = certify.smoothing_certify(wrapped, x, **options)
    assert imported.label == original.label is not None
    # Same seed, same noise: the votes differ only where float rounding of the two runtimes
    # flips a sample on a decision boundary, far inside the Monte-Carlo error (√n ≈ 45 votes).
    top = original.label
    assert abs(imported.counts[top] - original.counts[top]) <= 10
    assert math.isclose(imported.radius, original.radius, abs_tol=0.05)


def test_the_normalization_is_applied_before_the_graph(tmp_path: Path):
    cnn = small_cnn()
    (tmp_path / "cnn.onnx").write_bytes(export_classifier(cnn))
    norm = parse_normalization("0.5,0.25", 1)
    assert norm == Normalization(mean=(0.5,), scale=(4.0,))
    import_onnx(
        tmp_path / "cnn.onnx",
        model_id="normalized",
        input_shape=SHAPE,
        class_names=CLASSES,
        sigma=0.25,
        normalization=norm,
        repository=tmp_path,
    )
    wrapped, card = models.load("normalized", repository=tmp_path)
    x = torch.rand(4, *SHAPE)
    torch.testing.assert_close(wrapped(x), cnn((x - 0.5) / 0.25), atol=1e-5, rtol=1e-5)
    assert card.normalization == norm


class TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x + y).flatten(1)[:, :3]


class FeatureMap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (lambda: export(TwoInputs(), (torch.zeros(1, *SHAPE), torch.zeros(1, *SHAPE))), "2 inputs"),
        (lambda: export(FeatureMap(), (torch.zeros(1, *SHAPE),)), r"logits are \[B, K\]"),
        (lambda: export(small_cnn(), (torch.zeros(1, *SHAPE),)), "batch size is fixed"),
        (lambda: export_classifier(small_cnn()), r"not \[2, 5\]"),
        (lambda: b"not a graph", "cannot load the graph"),
    ],
    ids=["two-inputs", "4d-output", "fixed-batch", "wrong-classes", "not-onnx"],
)
def test_graphs_that_are_not_classifiers_are_refused_at_import(tmp_path, graph, message):
    (tmp_path / "bad.onnx").write_bytes(graph())
    classes = [str(i) for i in range(5)] if "2, 5" in message else CLASSES
    with pytest.raises(ONNXGraphError, match=message):
        import_onnx(
            tmp_path / "bad.onnx",
            model_id="bad",
            input_shape=SHAPE,
            class_names=classes,
            sigma=0.25,
            normalization=parse_normalization(None, 1),
            repository=tmp_path / "repository",
        )
    assert not (tmp_path / "repository").exists()


def test_an_input_shape_other_than_the_graphs_is_refused():
    graph = export_classifier(small_cnn())
    with pytest.raises(ONNXGraphError, match="--input-shape says"):
        check_graph(graph, (1, 16, 16), 3)
