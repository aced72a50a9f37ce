"""Cross-request dynamic batching: many jobs' samples, one forward pass.

Each worker process holds one :class:`ForwardBatcher` per loaded model. A job running in that
process takes a :class:`BatchedModel` from it (:meth:`ForwardBatcher.session`) and certifies
with it in place of the network: the certificates call it like the network (``generator=`` for
fresh Ω, ``omega_seed=`` for a frozen draw, nothing for a deterministic model), and each call
becomes a request that waits in the batcher. The batcher's thread merges the requests of the
jobs waiting (up to ``max_batch`` samples, waiting at most ``max_delay_seconds`` for the jobs
it served last to send their next request), runs the network once, and hands each job the
rows of its own logits.

What each job keeps (the replay guarantee):

- its noise is drawn by its own sampler (:class:`certify.NoisyVoteSampler`) from its own seeded
  generators, in the batch sizes it would use alone, before it reaches the batcher;
- its Ω is drawn from its own generator (fresh: ``generator=[(g₁, n₁), (g₂, n₂), …]``) or its own
  seed (frozen: ``omega_seed=[(s₁, n₁), (s₂, n₂), …]``) per segment of the merged batch, exactly
  what a batch of its samples alone draws (:data:`models.protocol.OmegaSegments`);
- a request is never split across forward passes; a job alone in the batcher gets a forward
  pass of exactly its own batch, so its votes are those of a direct call with the same seed
  and batch size, bit for bit;
- merged with other jobs, the model's kernels see a larger batch; a kernel whose float32
  result depends on the batch size (a blocked matrix product, a convolution algorithm chosen
  by shape) can move a logit by a rounding error and, rarely, flip an argmax. Certificates stay
  sound either way (each vote is an independent sample of the same base classifier), but the
  counts of a merged job may differ from its replay alone by such flips; on a classifier whose
  kernels are batch-size independent (e.g. a linear layer) merged and alone agree exactly.

Fairness is deficit round-robin (Shreedhar & Varghese 1995) over the jobs: each pass over the
jobs adds a quantum of samples to the credit of every job that waits, and a job's request joins
the batch when its credit covers it, so a job with batches of 1,000 samples gets about as many
samples per pass as one with batches of 100, and neither waits for the other to finish. A batch
holds requests of one kind (fresh Ω, frozen Ω, or deterministic); the next pass starts after the
last job served.

Cancellation: a job waiting in the batcher checks its cancellation (and so its time limit) while
it waits; a cancelled job's request is withdrawn before the next batch is formed (or, already
in a running forward pass, its rows are discarded) and the job stops with
:class:`certify.CertificationCancelled`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from certify.classifier import declared_lipschitz_bound, is_stochastic
from certify.sampling import CancellationCheck, CertificationCancelled, model_device
from models.layers import LipschitzModule
from models.layers.base import same_values
from models.protocol import refuse_two_omega_sources
from workers import metrics

if TYPE_CHECKING:
    from workers.config import ExecutionSettings
    from workers.model_cache import LoadedModel

logger = logging.getLogger(__name__)

DEFAULT_MAX_FORWARD_BATCH = 1_000
"""Samples per merged forward pass when neither the setting nor the model's card says."""

CANCEL_POLL_SECONDS = 0.05
"""How often a job waiting in the batcher checks its cancellation."""

FRESH, FROZEN, PLAIN = "fresh", "frozen", "plain"
"""Request kinds: fresh Ω from a generator, one frozen Ω from a seed, no Ω (deterministic)."""


_BOUNDS: weakref.WeakKeyDictionary[LipschitzModule, tuple[tuple[torch.Tensor, ...], float]] = (
    weakref.WeakKeyDictionary()
)
_BOUNDS_LOCK = threading.Lock()


def _tensors_of(network: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    return tuple(t.detach() for t in (*network.parameters(), *network.buffers()))


def network_lipschitz_bound(network: Any) -> float | None:
    """The network's declared ``lipschitz_bound()``, computed once per set of weights.

    Guarantee: the value returned is exactly what ``network.lipschitz_bound()`` returns now.
    For a network of :mod:`models` (a ``LipschitzModule``, whose bound is a function of its
    parameters and buffers and of its fixed construction), the bound is kept with a copy of
    every parameter and buffer and reused only while all of them hold exactly those values
    (dtype, device, shape and every element), so an edit of the weights, in place or through
    ``.data``, recomputes it; any other classifier is asked every time. Jobs of one loaded
    model (margin certificates, one per request) share the computation.
    """
    if not isinstance(network, LipschitzModule):
        return declared_lipschitz_bound(network)
    tensors = _tensors_of(network)
    with _BOUNDS_LOCK:
        cached = _BOUNDS.get(network)
    if cached is not None and same_values(cached[0], tensors):
        return cached[1]
    snapshot = tuple(t.clone() for t in tensors)
    bound = declared_lipschitz_bound(network)
    if bound is not None and same_values(snapshot, _tensors_of(network)):
        with _BOUNDS_LOCK:
            _BOUNDS[network] = (snapshot, bound)
    return bound


@dataclass(eq=False)
class _Request:
    """One call of a job: its inputs, its Ω source, and where its logits come back."""

    session: BatchedModel
    x: torch.Tensor
    kind: str
    omega: Any
    """The job's Ω generator (fresh), Ω seed (frozen) or ``None`` (plain)."""
    submitted: float = field(default_factory=time.monotonic)
    taken: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    logits: torch.Tensor | None = None
    error: BaseException | None = None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class BatchRecord:
    """What one merged forward pass held (for tests and the metrics)."""

    samples: int
    jobs: tuple[str, ...]
    """The session names of the jobs in the batch, in batch order."""


class ForwardBatcher:
    """Merges the forward calls of the jobs of one process on one model.

    ``max_batch``: the most samples one merged forward pass holds (a single request larger than
    it runs alone, never split). ``max_delay_seconds``: how long a request waits for the
    requests of the jobs served in the last batch (jobs in their sampling loop) before the
    batch runs without them; a batch runs at once when all of those have a request waiting or
    the waiting requests fill ``max_batch``. ``quantum``: samples of credit
    a waiting job gains per round-robin pass (default ``max_batch // 8``). ``model_name``
    labels the metrics.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_batch: int = DEFAULT_MAX_FORWARD_BATCH,
        max_delay_seconds: float = 0.005,
        quantum: int | None = None,
        model_name: str = "model",
        on_batch: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch}")
        if max_delay_seconds < 0:
            raise ValueError(f"max_delay_seconds must be >= 0; got {max_delay_seconds}")
        self.model = model
        self.max_batch = int(max_batch)
        self.max_delay_seconds = float(max_delay_seconds)
        self.quantum = max(1, int(quantum) if quantum is not None else self.max_batch // 8)
        self.model_name = model_name
        self._on_batch = on_batch
        self._stochastic = is_stochastic(model)
        self._cond = threading.Condition()
        self._sessions: list[BatchedModel] = []
        self._next = 0
        self._thread: threading.Thread | None = None

    @contextmanager
    def session(
        self, name: str = "job", should_cancel: CancellationCheck | None = None
    ) -> Iterator[BatchedModel]:
        """A job's view of the model for the duration of the block (its requests are merged
        with those of the other sessions open on this batcher)."""
        batched = BatchedModel(self, name, should_cancel)
        with self._cond:
            self._sessions.append(batched)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name=f"hycas-batcher-{self.model_name}", daemon=True
                )
                self._thread.start()
        try:
            yield batched
        finally:
            with self._cond:
                index = self._sessions.index(batched)
                del self._sessions[index]
                if index < self._next:
                    self._next -= 1
                self._cond.notify_all()

    # The batcher's thread.

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not any(s.pending is not None for s in self._sessions):
                    if not self._sessions:
                        self._thread = None
                        return
                    self._cond.wait()
                oldest = min(s.pending.submitted for s in self._sessions if s.pending is not None)
                deadline = oldest + self.max_delay_seconds
                while not self._ready():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = self._form_batch()
            if batch:
                try:
                    self._run(batch)
                except Exception:  # the jobs have their logits; keep serving the others
                    logger.exception("event=batcher_record_failed model=%s", self.model_name)

    def _ready(self) -> bool:
        """No session served in the last batch is still to send its next request (a job in
        its sampling loop comes back within a noise draw; one doing other work is not waited
        for), or the waiting requests fill a batch."""
        waiting = [s.pending for s in self._sessions if s.pending is not None]
        expected = any(s.pending is None and s.served_last for s in self._sessions)
        return not expected or sum(r.size for r in waiting) >= self.max_batch

    def _form_batch(self) -> list[_Request]:
        """Deficit round-robin over the sessions from ``_next``: one request per session at
        most, one kind per batch, at most ``max_batch`` samples (a larger request alone). The
        next batch starts with the first session left waiting, else after the last served."""
        count = len(self._sessions)
        order = [self._sessions[(self._next + i) % count] for i in range(count)]
        chosen: list[_Request] = []
        kind: str | None = None
        capacity = self.max_batch
        last = -1
        while True:
            candidates = [
                (i, s)
                for i, s in enumerate(order)
                if s.pending is not None
                and not s.pending.taken
                and (kind is None or s.pending.kind == kind)
                and (s.pending.size <= capacity or not chosen)
            ]
            if not candidates:
                break
            for i, s in candidates:
                request = s.pending
                if chosen and (request.size > capacity or request.kind != kind):
                    continue
                if s.deficit < request.size:
                    s.deficit += self.quantum
                if s.deficit >= request.size:
                    s.deficit = 0  # its queue is empty once served: DRR drops the credit
                    request.taken = True
                    chosen.append(request)
                    kind = request.kind
                    capacity -= request.size
                    last = i
        left_waiting = [
            i for i, s in enumerate(order) if s.pending is not None and not s.pending.taken
        ]
        for s in self._sessions:
            s.served_last = False
        for request in chosen:
            request.session.pending = None
            request.session.served_last = True
        if count:
            start = left_waiting[0] if left_waiting else last + 1
            self._next = (self._next + start) % count
        return chosen

    def _run(self, batch: list[_Request]) -> None:
        started = time.monotonic()
        try:
            logits = self._forward(batch)
        except BaseException as error:  # every job of the batch gets the model's error
            for request in batch:
                request.error = error
                request.done.set()
            return
        offset = 0
        for request in batch:
            request.logits = logits[offset : offset + request.size]
            offset += request.size
            request.done.set()
        self._record(batch, offset, started)

    def _record(self, batch: list[_Request], samples: int, started: float) -> None:
        name = self.model_name
        for request in batch:
            metrics.BATCHER_WAIT.labels(model=name).observe(started - request.submitted)
        metrics.FORWARD_BATCH_SIZE.labels(model=name).observe(samples)
        metrics.JOBS_PER_FORWARD_BATCH.labels(model=name).observe(len(batch))
        metrics.FORWARD_SAMPLES.labels(model=name).inc(samples)
        metrics.FORWARD_SECONDS.labels(model=name).inc(time.monotonic() - started)
        if self._on_batch is not None:
            self._on_batch(BatchRecord(samples, tuple(r.session.name for r in batch)))

    def _forward(self, batch: list[_Request]) -> torch.Tensor:
        with torch.inference_mode():
            if len(batch) == 1:  # alone: exactly the job's own call
                return batch[0].session.call_model(batch[0])
            x = torch.cat([r.x for r in batch])
            kind = batch[0].kind
            if kind == FRESH:
                return self.model(x, generator=[(r.omega, r.size) for r in batch])
            if kind == FROZEN:
                return self.model(x, omega_seed=[(r.omega, r.size) for r in batch])
            return self.model(x)


class BatchedModel(torch.nn.Module):
    """One job's view of a model whose forward passes a :class:`ForwardBatcher` merges.

    It offers what the certificates read from a classifier (``stochastic``,
    ``lipschitz_bound()``, the device of the network's parameters, ``input_shape`` and
    ``num_classes`` when the network has them), and its calls block until the batcher has run
    them. Use it from one thread (the job's). A call with gradients enabled (the minimum-norm
    attack) is not batched: it runs the network directly in the calling thread.
    """

    def __init__(
        self, batcher: ForwardBatcher, name: str, should_cancel: CancellationCheck | None
    ) -> None:
        super().__init__()
        self.network = batcher.model  # a submodule: the device is that of its parameters
        self.name = name
        self.stochastic = batcher._stochastic
        self._batcher = batcher
        self._should_cancel = should_cancel
        self.pending: _Request | None = None
        self.deficit = 0
        self.served_last = False
        """Served in the batcher's last batch: the batcher waits for its next request."""
        self.samples_done = 0
        for attribute in ("input_shape", "num_classes"):
            if hasattr(batcher.model, attribute):
                setattr(self, attribute, getattr(batcher.model, attribute))

    @property
    def device(self) -> torch.device:
        return model_device(self.network)

    def lipschitz_bound(self) -> float | None:
        """The network's bound (:func:`network_lipschitz_bound`: the same value, computed
        once per set of weights)."""
        return network_lipschitz_bound(self.network)

    def forward(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        omega_seed: int | None = None,
    ) -> torch.Tensor:
        refuse_two_omega_sources(generator, omega_seed)
        if torch.is_grad_enabled():  # an attack needs gradients: the network, in this thread
            return self.network(x, generator=generator, omega_seed=omega_seed)
        if not self.stochastic:
            kind, omega = PLAIN, None
        elif omega_seed is not None:
            kind, omega = FROZEN, int(omega_seed)
        else:
            if generator is not None and not isinstance(generator, torch.Generator):
                raise ValueError("a batched model takes one Ω generator per call, not segments")
            kind, omega = FRESH, generator
        request = _Request(self, x, kind, omega)
        batcher = self._batcher
        with batcher._cond:
            if self.pending is not None:
                raise RuntimeError("a batched model serves one call at a time (one job thread)")
            self.pending = request
            batcher._cond.notify_all()
        while not request.done.wait(CANCEL_POLL_SECONDS):
            if self._should_cancel is not None and self._should_cancel():
                with batcher._cond:
                    if not request.taken:
                        self.pending = None
                        batcher._cond.notify_all()
                        raise CertificationCancelled(self.samples_done)
                request.done.wait()
                raise CertificationCancelled(self.samples_done)
        if request.error is not None:
            raise request.error
        self.samples_done += request.size
        assert request.logits is not None
        return request.logits

    def call_model(self, request: _Request) -> torch.Tensor:
        """The network on ``request`` alone, called as the job would call it directly."""
        if request.kind == FRESH:
            return self.network(request.x, generator=request.omega)
        if request.kind == FROZEN:
            return self.network(request.x, omega_seed=request.omega)
        return self.network(request.x)


class ModelBatchers:
    """The batchers of one process: one per loaded network, made on first use.

    ``max_batch``: ``HYCAS_MAX_FORWARD_BATCH`` (``None``: the card's ``max_forward_batch``,
    else :data:`DEFAULT_MAX_FORWARD_BATCH`); ``max_delay_ms``: ``HYCAS_BATCH_MAX_DELAY_MS``.
    A batcher lives while a job uses it; the next job on the same network makes a new one.
    """

    def __init__(self, max_batch: int | None = None, max_delay_ms: float = 5.0) -> None:
        self.max_batch = max_batch
        self.max_delay_ms = max_delay_ms
        self._lock = threading.Lock()
        # By the network's id, held while a job uses it (the batcher holds the network).
        self._batchers: weakref.WeakValueDictionary[int, ForwardBatcher] = (
            weakref.WeakValueDictionary()
        )

    @classmethod
    def from_settings(cls, settings: ExecutionSettings) -> ModelBatchers:
        return cls(settings.max_forward_batch, settings.batch_max_delay_ms)

    @contextmanager
    def session(
        self, loaded: LoadedModel, name: str, should_cancel: CancellationCheck | None
    ) -> Iterator[LoadedModel]:
        """``loaded`` with its network replaced by a session of the network's batcher (as is
        when only its card is loaded)."""
        if loaded.model is None:
            yield loaded
            return
        batcher = self.batcher(loaded.model, loaded.card, loaded.model_id)
        with batcher.session(name, should_cancel) as batched:
            yield dataclasses.replace(loaded, model=batched)

    def batcher(self, model: Any, card: dict[str, Any], model_name: str) -> ForwardBatcher:
        with self._lock:
            batcher = self._batchers.get(id(model))
            if batcher is None:
                max_batch = self.max_batch or int(
                    card.get("max_forward_batch") or DEFAULT_MAX_FORWARD_BATCH
                )
                batcher = ForwardBatcher(
                    model,
                    max_batch=max_batch,
                    max_delay_seconds=self.max_delay_ms / 1000.0,
                    model_name=model_name,
                )
                self._batchers[id(model)] = batcher
            return batcher
