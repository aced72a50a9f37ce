"""The engine on a CUDA model: noise and Ω on the device, no host sync per batch, replay."""

from __future__ import annotations

import pytest
import torch

from certify import NoisyVoteSampler, smoothing_certify
from tests.certify.classifiers import FairCoinClassifier, LinearBinaryClassifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SIGMA = 0.25


def test_linear_certificate_on_cuda_is_sound_and_replays(image):
    model = LinearBinaryClassifier.through_point(
        image, 1.5 * SIGMA, torch.Generator().manual_seed(0)
    ).to("cuda")
    d = model.distance_to_boundary(image.to("cuda"))
    first = smoothing_certify(model, image, sigma=SIGMA, n=100_000, batch_size=10_000, seed=1)
    again = smoothing_certify(model, image, sigma=SIGMA, n=100_000, batch_size=10_000, seed=1)
    assert first.device.startswith("cuda")
    assert first == again
    assert 0.95 * d <= first.radius <= d


def test_counting_never_synchronizes_with_the_host(image):
    model = FairCoinClassifier().to("cuda")
    sampler = NoisyVoteSampler(
        model, image, sigma=SIGMA, batch_size=1000, seed=0, samples_planned=20_000
    )
    sampler.count(1000)  # the first batch allocates buffers and learns the class count
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        counts = sampler.count(19_000)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert counts.device.type == "cuda"
    assert int(counts.sum()) == 19_000


def test_stochastic_model_on_cuda_replays_from_the_seed(image):
    model = FairCoinClassifier().to("cuda")
    first = smoothing_certify(model, image, sigma=SIGMA, n=5000, seed=3)
    torch.cuda.manual_seed_all(99)
    again = smoothing_certify(model, image, sigma=SIGMA, n=5000, seed=3)
    assert first.counts == again.counts and first.abstained


def _hycas_on_cuda():
    from models import build_hycas

    torch.manual_seed(0)
    return build_hycas((1, 8, 8), num_classes=10).eval().to("cuda")


def test_hycas_counting_never_synchronizes_with_the_host(image):
    model = _hycas_on_cuda()
    sampler = NoisyVoteSampler(
        model, image, sigma=SIGMA, batch_size=500, seed=0, samples_planned=5000
    )
    sampler.count(500)  # first batch: buffers, class count, derived weights cached
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        counts = sampler.count(4500)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(counts.sum()) == 4500


def test_margin_on_cuda_runs_in_ieee_float32(image, tf32_on):
    from certify import margin_certify

    certificate = margin_certify(_hycas_on_cuda(), image, ensemble=4, seed=5)
    assert certificate.device.startswith("cuda")
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is False
