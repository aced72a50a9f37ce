"""Prometheus metrics of job execution (``hycas_`` names, base units).

They are recorded wherever a job runs: in the gateway process in embedded mode, in Celery
worker processes in distributed mode. With ``PROMETHEUS_MULTIPROC_DIR`` set (the ``hycas``
commands set it from ``HYCAS_METRICS_DIR``) every process writes its values there and any
process serving ``/metrics`` from that folder exposes them all (prometheus-client's
multiprocess mode); the gateway's HTTP metrics live in :mod:`service.metrics`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOB_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
"""Seconds-to-minutes work: a digits certification takes seconds, a large one on CPU minutes."""

RADIUS_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
"""L2 radii in the ``[0, 1]`` input space: smoothing reaches about 4σ, margins far less."""

JOBS = Counter(
    "hycas_jobs",
    "Jobs that entered each state (queued, running, succeeded, failed, cancelled).",
    ["state"],
)
JOB_DURATION = Histogram(
    "hycas_job_duration_seconds",
    "Time from a job's start on a worker to its end (succeeded, failed or cancelled).",
    buckets=JOB_SECONDS_BUCKETS,
)
JOB_QUEUE_WAIT = Histogram(
    "hycas_job_queue_wait_seconds",
    "Time from a job's submission to its first start on a worker.",
    buckets=JOB_SECONDS_BUCKETS,
)
NOISY_SAMPLES = Counter(
    "hycas_noisy_samples",
    "Forward passes of the model on noisy inputs (smoothing and the radius test).",
    ["model"],
)
CERTIFICATES = Counter(
    "hycas_certificates",
    "Certificates computed, by model and method (smoothing, margin, radius_test).",
    ["model", "method"],
)
ABSTENTIONS = Counter(
    "hycas_abstentions",
    "Certificates without a label: smoothing abstained, or the radius test did not certify.",
    ["model", "method"],
)
CERTIFIED_RADIUS = Histogram(
    "hycas_certified_radius",
    "Certified L2 radius (input space [0, 1]^{C×H×W}) of certificates with a label.",
    ["model", "method"],
    buckets=RADIUS_BUCKETS,
)
MODELS_LOADED = Gauge(
    "hycas_models_loaded",
    "Model versions loaded, per process holding them.",
    ["model", "version"],
    multiprocess_mode="livesum",
)
JOBS_RUNNING = Gauge(
    "hycas_jobs_running",
    "Jobs running now.",
    multiprocess_mode="livesum",
)
JOBS_REAPED = Counter(
    "hycas_jobs_reaped",
    "Jobs the reaper acted on: requeued (runner lost), resent (message lost), failed "
    "(worker_lost after the last attempt), cancelled (cancel not honoured by a runner).",
    ["action"],
)
FORWARD_BATCH_SIZE = Histogram(
    "hycas_forward_batch_size",
    "Samples in one forward pass of the batcher (all jobs merged).",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4096, 8192),
)
JOBS_PER_FORWARD_BATCH = Histogram(
    "hycas_jobs_per_forward_batch",
    "Jobs whose samples shared one forward pass of the batcher.",
    ["model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128),
)
BATCHER_WAIT = Histogram(
    "hycas_batcher_wait_seconds",
    "Time a job's request waited in the batcher before its forward pass started.",
    ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
FORWARD_SAMPLES = Counter(
    "hycas_forward_samples",
    "Samples through the batcher's forward passes (noisy samples and frozen draws); "
    "rate() is the model's samples/s.",
    ["model"],
)
FORWARD_SECONDS = Counter(
    "hycas_forward_seconds",
    "Seconds the batcher spent in forward passes; samples over seconds is the busy throughput.",
    ["model"],
)
