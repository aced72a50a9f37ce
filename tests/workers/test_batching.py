"""The cross-request batcher: merged jobs keep their votes, cancellation, fairness, replay.

The classifier is linear with a stochastic offset drawn from Ω (``NoisyLinear``): each logit is a
row-wise float64 reduction, so its value does not depend on the batch it is computed in, and
a merged job must get exactly the votes it gets alone.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from prometheus_client import REGISTRY

import certify
from models import build_hycas
from models.layers.omega import OmegaSource
from tests.workers.records import image as record_image
from tests.workers.records import job_record, parameters
from tests.workers.small_models import (
    SMALL_MODEL_ID,
    SMALL_MODEL_SIGMA,
    SmallModelSource,
    build_small_model,
)
from workers.batching import (
    FRESH,
    BatchedModel,
    BatchRecord,
    ForwardBatcher,
    ModelBatchers,
    _Request,
)
from workers.certification import CertificationMethod
from workers.jobs import JobStatus
from workers.model_cache import ModelCache
from workers.runner import JobRunner
from workers.store import InMemoryJobStore, StoreLifetimes


class NoisyLinear(torch.nn.Module):
    """Logits ``W x + b + τ·ω`` with ``ω ~ N(0, I)`` drawn from Ω (fresh, frozen or segments);
    each ``x → s(x; Ω)`` is ``‖W‖₂``-Lipschitz."""

    stochastic = True

    def __init__(self, features: int = 64, classes: int = 4, tau: float = 0.3) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(11)
        self.register_buffer("weight", torch.randn(classes, features, generator=generator))
        self.register_buffer("bias", torch.zeros(classes))
        self.tau = tau

    def forward(self, x, *, generator=None, omega_seed=None):
        omega = OmegaSource(x.shape[0], x.device, generator=generator, seed=omega_seed)
        rows = x.flatten(1).to(torch.float64).unsqueeze(1) * self.weight.to(torch.float64)
        logits = rows.sum(dim=-1) + self.bias.to(torch.float64)
        offset = self.tau * omega.normal(self.weight.shape[0]).to(torch.float64)
        return (logits + offset).to(torch.float32)

    def lipschitz_bound(self) -> float:
        return float(torch.linalg.matrix_norm(self.weight.to(torch.float64), ord=2))


def image(seed: int) -> torch.Tensor:
    return torch.rand((1, 8, 8), generator=torch.Generator().manual_seed(seed))


def run_jobs(batcher: ForwardBatcher, jobs: dict[str, callable]) -> dict[str, object]:
    """Run each job ``fn(model)`` in its own thread with its own session; their results."""
    results: dict[str, object] = {}
    sessions_open = threading.Barrier(len(jobs))

    def run(name: str, fn) -> None:
        with batcher.session(name) as model:
            sessions_open.wait()
            try:
                results[name] = fn(model)
            except Exception as error:
                results[name] = error

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def smoothing(x: torch.Tensor, seed: int, n: int = 300, batch_size: int = 100):
    return lambda model: certify.smoothing_certify(
        model, x, sigma=0.5, n0=50, n=n, batch_size=batch_size, seed=seed
    )


def test_two_jobs_merged_in_one_forward_pass_get_the_certificates_they_get_alone():
    network = NoisyLinear()
    batches: list[BatchRecord] = []
    batcher = ForwardBatcher(
        network, max_batch=1000, max_delay_seconds=1.0, on_batch=batches.append
    )
    jobs = {"a": smoothing(image(1), seed=5), "b": smoothing(image(2), seed=6)}
    jobs["m"] = lambda model: certify.margin_certify(model, image(3), ensemble=4, seed=9)
    jobs["n"] = lambda model: certify.margin_certify(model, image(4), ensemble=4, seed=10)
    merged = run_jobs(batcher, jobs)

    assert any({"a", "b"} <= set(record.jobs) for record in batches)
    assert any({"m", "n"} <= set(record.jobs) for record in batches)
    assert all(len(set(record.jobs)) == len(record.jobs) for record in batches)
    for name, x, seed in (("a", image(1), 5), ("b", image(2), 6)):
        alone = smoothing(x, seed)(network)
        assert merged[name].counts == alone.counts
        assert merged[name].selection_counts == alone.selection_counts
        assert merged[name].radius == alone.radius
    for name, x, seed in (("m", image(3), 9), ("n", image(4), 10)):
        alone = certify.margin_certify(network, x, ensemble=4, seed=seed)
        assert merged[name].logits == alone.logits
        assert merged[name].radius == alone.radius
        assert merged[name].radius <= alone.margin / (2**0.5 * network.lipschitz_bound())


def test_a_job_alone_in_the_batcher_gets_the_votes_of_a_direct_call_bit_for_bit():
    x = image(7)
    torch.manual_seed(0)
    hycas = build_hycas((1, 8, 8), 4, width=4, attention_noise_std=0.5).eval()
    batcher = ForwardBatcher(hycas, max_batch=64, max_delay_seconds=0.5)
    job = smoothing(x, seed=3, n=200, batch_size=64)
    with batcher.session("alone") as model:
        batched = job(model)
        margin = certify.margin_certify(model, x, ensemble=3, seed=4)
    direct = job(hycas)
    assert batched.counts == direct.counts and batched.selection_counts == direct.selection_counts
    assert margin.logits == certify.margin_certify(hycas, x, ensemble=3, seed=4).logits


def test_merged_hycas_jobs_draw_their_own_omega_and_noise():
    """On HyCAS the kernels may round differently in a larger batch; the votes then differ by
    rare argmax flips only, never by a shifted noise or Ω stream."""
    torch.manual_seed(0)
    hycas = build_hycas((1, 8, 8), 4, width=4, attention_noise_std=0.5).eval()
    batcher = ForwardBatcher(hycas, max_batch=1000, max_delay_seconds=1.0)
    merged = run_jobs(batcher, {"a": smoothing(image(1), seed=5), "b": smoothing(image(2), seed=6)})
    for name, x, seed in (("a", image(1), 5), ("b", image(2), 6)):
        alone = smoothing(x, seed)(hycas)
        flips = sum(abs(m - a) for m, a in zip(merged[name].counts, alone.counts, strict=True))
        assert flips <= 0.02 * 2 * 300


def test_a_cancelled_job_leaves_the_next_batch_and_the_others_continue():
    network = NoisyLinear()
    batches: list[BatchRecord] = []
    batcher = ForwardBatcher(
        network, max_batch=1000, max_delay_seconds=5.0, on_batch=batches.append
    )
    cancelled = threading.Event()
    outcome: dict[str, object] = {}
    b_may_start = threading.Event()

    def job_a() -> None:
        with batcher.session("a", should_cancel=cancelled.is_set) as model:
            b_may_start.set()
            started = time.monotonic()
            try:
                smoothing(image(1), seed=5)(model)
            except certify.CertificationCancelled as error:
                outcome["a"] = (error, time.monotonic() - started)

    with batcher.session("b") as model_b:
        with torch.inference_mode():  # B is served once: the batcher then waits for it
            model_b(torch.zeros(1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        thread = threading.Thread(target=job_a)
        thread.start()
        b_may_start.wait(5)
        # A's first request waits for B's next one (delay 5 s); it is cancelled while it waits.
        time.sleep(0.2)
        cancelled.set()
        thread.join(timeout=10)
        outcome["b"] = smoothing(image(2), seed=6)(model_b)

    error, seconds = outcome["a"]
    assert isinstance(error, certify.CertificationCancelled) and error.samples_done == 0
    assert seconds < 2.0
    assert all("a" not in record.jobs for record in batches)
    assert outcome["b"].counts == smoothing(image(2), seed=6)(network).counts


def test_deficit_round_robin_gives_a_big_job_its_share_of_samples_not_more():
    """Under contention (every job always has a request waiting), a job of 1,000-sample
    requests and nine of 100-sample requests share batches of 1,000 about equally by samples:
    the big one gains 125 samples of credit per batch and is served once in 9 batches."""
    batcher = ForwardBatcher(NoisyLinear(), max_batch=1000, quantum=125)
    names = ["big"] + [f"small{i}" for i in range(9)]
    sessions = [BatchedModel(batcher, name, None) for name in names]
    batcher._sessions.extend(sessions)  # no thread: batches are formed by hand
    served = {name: 0 for name in names}
    for _ in range(9):
        for session in sessions:
            if session.pending is None:
                size = 1000 if session.name == "big" else 100
                session.pending = _Request(session, torch.zeros(size, 1, 8, 8), FRESH, None)
        batch = batcher._form_batch()
        assert sum(r.size for r in batch) <= 1000
        for request in batch:
            served[request.session.name] += request.size
    assert served["big"] == 1000
    assert all(served[f"small{i}"] == 800 for i in range(9))


def test_a_big_job_and_small_ones_all_finish_the_small_ones_first():
    network = NoisyLinear()
    batches: list[BatchRecord] = []
    batcher = ForwardBatcher(
        network, max_batch=1000, max_delay_seconds=0.005, on_batch=batches.append
    )
    finished: dict[str, float] = {}

    def job(name: str, n: int, batch_size: int):
        def run(model):
            result = smoothing(image(len(name)), seed=3, n=n, batch_size=batch_size)(model)
            finished[name] = time.monotonic()
            return result

        return run

    jobs = {"big": job("big", 40_000, 1000)}
    jobs.update({f"small{i}": job(f"small{i}", 400, 100) for i in range(6)})
    results = run_jobs(batcher, jobs)
    assert all(isinstance(r, certify.SmoothingCertificate) for r in results.values())
    assert all(finished[f"small{i}"] < finished["big"] for i in range(6))
    last_small = max(i for i, record in enumerate(batches) if any(j != "big" for j in record.jobs))
    big_requests_meanwhile = sum("big" in record.jobs for record in batches[: last_small + 1])
    assert big_requests_meanwhile <= 20  # of its 41: it did not run to its end first
    assert sum(record.samples for record in batches) == 40_050 + 6 * 450


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        ForwardBatcher(NoisyLinear(), max_batch=0)
    with pytest.raises(ValueError, match="max_delay"):
        ForwardBatcher(NoisyLinear(), max_delay_seconds=-1)


def test_jobs_running_at_once_on_a_runner_share_forward_passes_and_keep_their_certificates():
    """The runner certifies through its process's batcher: three jobs at once share forward
    passes (smoothing and margin), each with its own seed's certificates."""
    lifetimes = StoreLifetimes(image_ttl=60, pending_ttl=120, result_ttl=30)
    runner = JobRunner(
        InMemoryJobStore(lifetimes),
        ModelCache(SmallModelSource(), "cpu"),
        time_limit_seconds=60,
        max_attempts=3,
        batchers=ModelBatchers(max_batch=1000, max_delay_ms=500),
    )
    jobs = []
    for seed in (4, 5, 6):
        job = job_record(parameters=parameters(n=300, seed=seed))
        runner.store.save_image(job.image_key, record_image(0.3))
        runner.store.create_job(job)
        jobs.append(job)

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"model": SMALL_MODEL_ID}) or 0.0

    before = (
        sample("hycas_jobs_per_forward_batch_sum"),
        sample("hycas_jobs_per_forward_batch_count"),
    )
    threads = [threading.Thread(target=runner.run, args=(job.id,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    jobs_in_batches = sample("hycas_jobs_per_forward_batch_sum") - before[0]
    batches = sample("hycas_jobs_per_forward_batch_count") - before[1]
    assert jobs_in_batches > batches  # some forward pass held several jobs

    network = build_small_model()
    x = torch.full((1, 8, 8), 0.3)
    for job in jobs:
        stored = runner.store.get_job(job.id)
        assert stored.status is JobStatus.SUCCEEDED
        seed = job.parameters.seed
        alone = certify.smoothing_certify(
            network, x, sigma=SMALL_MODEL_SIGMA, n0=16, n=300, batch_size=50, seed=seed
        )
        details = stored.result.certificates[CertificationMethod.SMOOTHING].details
        flips = sum(abs(a - b) for a, b in zip(details["counts"], alone.counts, strict=True))
        assert flips <= 6  # kernel rounding in a larger batch: rare argmax flips at most
        margin = stored.result.certificates[CertificationMethod.MARGIN].details
        direct = certify.margin_certify(network, x, ensemble=job.parameters.ensemble, seed=seed)
        assert margin["label"] == direct.label
        assert margin["radius"] == pytest.approx(direct.radius, rel=1e-5, abs=1e-6)


def test_a_batched_model_gives_the_network_bound_and_recomputes_it_when_the_weights_change():
    """The bound shared across jobs is always the network's own: an edit of the weights (in
    place, or through ``.data``, which no version counter sees) is never answered with the
    bound of the old weights, which could be smaller than the new one (an overstated radius)."""
    hycas = build_hycas((1, 8, 8), 4, width=4).eval()
    batcher = ForwardBatcher(hycas)
    with batcher.session("first") as model:
        assert model.lipschitz_bound() == hycas.lipschitz_bound()
        assert model.lipschitz_bound() == hycas.lipschitz_bound()
    layers = hycas.body.layers
    kernel = layers["stage1_block1"].body.layers["gate"].branches[1].kernel
    for edit in (
        lambda: layers["standardize"].scale.data.mul_(2.0),  # a buffer, through .data
        lambda: kernel.mul_(2.0),  # a parameter, in place
    ):
        before = hycas.lipschitz_bound()
        with torch.no_grad():
            edit()
        assert hycas.lipschitz_bound() > before
        with ForwardBatcher(hycas).session("next") as model:
            assert model.lipschitz_bound() == hycas.lipschitz_bound()
