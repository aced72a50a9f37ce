"""The sampling engine's forward seam: an injected forward pass sees each noisy batch with the
run's Ω generator, and a forward that shares its pass with another job's samples (Ω drawn per
segment) gives the votes the run gets alone."""

from __future__ import annotations

import torch

from certify import NoisyVoteSampler, model_forward
from models import build_hycas
from models.baselines import build_plain_cnn


def tiny_hycas() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_hycas((1, 8, 8), 4, width=4, attention_noise_std=0.5).eval()


def sampler(model, image, **options) -> NoisyVoteSampler:
    return NoisyVoteSampler(
        model, image, sigma=0.5, batch_size=16, seed=7, samples_planned=64, **options
    )


def test_an_injected_forward_sees_every_batch_with_the_runs_omega_generator(image):
    model = tiny_hycas()
    seen = []
    default = model_forward(model)

    def recording(batch: torch.Tensor, omega: torch.Generator | None) -> torch.Tensor:
        seen.append((batch.shape[0], omega))
        return default(batch, omega)

    counts = sampler(model, image, forward=recording).count(40)
    assert torch.equal(counts, sampler(model, image).count(40))
    assert [size for size, _ in seen] == [16, 16, 8]
    assert all(isinstance(omega, torch.Generator) for _, omega in seen)
    assert len({id(omega) for _, omega in seen}) == 1


def test_a_deterministic_classifier_gets_no_omega_generator(image):
    torch.manual_seed(0)
    cnn = build_plain_cnn((1, 8, 8), 4, width=4, hidden=8).eval()
    omegas = []

    def recording(batch: torch.Tensor, omega: torch.Generator | None) -> torch.Tensor:
        omegas.append(omega)
        return cnn(batch)

    counts = sampler(cnn, image, forward=recording).count(32)
    assert torch.equal(counts, sampler(cnn, image).count(32))
    assert omegas == [None, None]


def test_sharing_a_forward_pass_with_another_jobs_segment_keeps_the_votes(image):
    model = tiny_hycas()
    other_job = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))

    def merged(batch: torch.Tensor, omega: torch.Generator | None) -> torch.Tensor:
        segments = [(omega, batch.shape[0]), (torch.Generator().manual_seed(99), 5)]
        logits = model(torch.cat([batch, other_job]), generator=segments)
        return logits[: batch.shape[0]]

    alone = sampler(model, image)
    shared = sampler(model, image, forward=merged)
    for size in (10, 30):
        assert torch.equal(shared.count(size), alone.count(size))
