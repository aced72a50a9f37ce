"""``hycas serve``, ``hycas worker`` and ``hycas certify``: the service's commands.

Heavy imports (torch, FastAPI, Celery) happen inside the handlers, so ``hycas --help``
stays fast and ``PROMETHEUS_MULTIPROC_DIR`` is set before prometheus-client is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from service.model_commands import whole_number

if TYPE_CHECKING:
    from certify import ProgressCallback
    from service.runtime import ServiceRuntime
    from workers.certification import CertificationParameters
    from workers.model_cache import LoadedModel


def _use_metrics_dir(directory: Path | None) -> None:
    """Multiprocess metrics in ``directory`` for this process and the ones it starts."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


tcp_port = whole_number(1, 65535)
"""A TCP port number, for argparse."""


def startup_line(runtime: ServiceRuntime, host: str, port: int) -> str:
    """What ``hycas serve`` says once its models are loaded: mode, models, where the docs are."""
    statuses = runtime.models.version_statuses()
    newest = {s.model_id: s.version for s in statuses if s.serving}
    models = ", ".join(f"{model_id}@{version}" for model_id, version in newest.items()) or "none"
    failing = [f"{s.model_id}@{s.version}" for s in statuses if not s.available]
    mode = (
        "distributed mode (jobs go through Redis to `hycas worker` processes)"
        if runtime.settings.distributed
        else "embedded mode (jobs run in this process)"
    )
    shown_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(
        host, f"[{host}]" if ":" in host else host
    )
    unavailable = f"; unavailable: {', '.join(failing)} (reasons at /readyz)" if failing else ""
    docs = f"http://{shown_host}:{port}/docs"
    return f"hycas serve: {mode}; models: {models}{unavailable}; docs: {docs}"


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.core.config import Settings
    from service.http_protocol import header_deadline_protocol
    from service.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    _use_metrics_dir(settings.metrics_dir)
    from service.main import app

    # Every model version is loaded (and checked) before the first request, then announced.
    print(startup_line(app.state.runtime, args.host, args.port), flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # Beyond this many connections new requests get 503 at once; idle ones are closed,
        # and so are connections whose request headers are late (uvicorn would wait forever).
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_seconds,
        http=header_deadline_protocol(settings.upload_timeout_seconds, settings.http_parser),
        # "auto": uvloop when installed (as it is with the package), about 15 % less CPU per
        # margin-only request than asyncio's loop.
        loop=settings.event_loop,
    )
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from service.core.config import Settings

    settings = Settings()
    if settings.redis_url is None:
        print(
            "hycas: error: a worker needs HYCAS_REDIS_URL (e.g. redis://127.0.0.1:6379/0); "
            "without it `hycas serve` runs jobs itself",
            file=sys.stderr,
        )
        return 2
    metrics_port = args.metrics_port or settings.worker_metrics_port
    metrics_dir = settings.metrics_dir
    if metrics_port is not None and metrics_dir is None:
        # The pool's processes write their metrics here; the port serves their sum.
        metrics_dir = Path(tempfile.mkdtemp(prefix="hycas-worker-metrics-"))
    _use_metrics_dir(metrics_dir)

    from workers.app import app

    if metrics_port is not None:
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(metrics_port, registry=registry)
    processes = args.concurrency or settings.worker_pool_size
    # One process: several jobs in its threads share its model copy and its forward batcher.
    pool = args.pool or ("threads" if processes == 1 else "prefork")
    concurrency = settings.jobs_per_process if pool == "threads" else processes
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={settings.log_level}",
        f"--queues={settings.queue_name}",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    app.worker_main(argv)
    return 0


def _print_report(report: object) -> None:
    from workers.certification import AttackReport, CertificationReport
    from workers.guarantees import rounded_down

    assert isinstance(report, CertificationReport)
    model = report.provenance.model
    print(f"model      {model.id} v{model.version} (sha256 {model.sha256[:12]}…)")
    print(f"input      {report.input.format} {report.input.original_shape} → {report.input.shape}")
    for step in report.input.transforms:
        print(f"             {step}")
    for warning in report.warnings:
        print(f"WARNING    {warning}")
    prediction = report.prediction
    answer = "none" if prediction.label is None else f"{prediction.label} ({prediction.class_name})"
    print(f"prediction {answer}: {prediction.note}")
    for method, certificate in report.certificates.items():
        if isinstance(certificate, AttackReport):
            for finding in (certificate, *certificate.other_classifiers):
                found = "nothing" if finding.label_found is None else f"label {finding.label_found}"
                print(
                    f"{method.value:<10} {found:<10} distance {finding.distance} "
                    f"({finding.classifier}; {finding.queries:,} queries; {finding.seconds:.2f} s)"
                )
                print(f"             {finding.guarantee}")
            continue
        label = "abstain" if certificate.label is None else f"label {certificate.label}"
        print(
            f"{method.value:<10} {label:<10} radius {rounded_down(certificate.radius)} "
            f"({certificate.classifier}; {certificate.seconds:.2f} s)"
        )
        print(f"             {certificate.guarantee}")
    for bracket in report.brackets:
        print(f"bracket    {bracket.statement}")
    print(f"seed       {report.provenance.seed}")


@contextlib.contextmanager
def certification_progress(
    image: str,
    loaded: LoadedModel,
    parameters: CertificationParameters,
    stream: TextIO | None = None,
    quiet: bool = False,
) -> Iterator[ProgressCallback]:
    """On a terminal, a line saying what runs and a bar over its samples; elsewhere (or
    ``quiet``) nothing."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    interactive = stream.isatty() and not quiet
    if interactive:
        plan = ", ".join(
            f"{method.value} ({count:,} forward pass{'' if count == 1 else 'es'})"
            for method in parameters.methods
            if (count := parameters.samples_planned(method))
        )
        print(f"certifying {image} with {loaded.model_id} v{loaded.version}: {plan}", file=stream)
    with tqdm(
        total=parameters.total_samples_planned,
        unit="pass",
        file=stream,
        disable=not interactive,
        leave=False,
        dynamic_ncols=True,
    ) as bar:

        def report(done: int, _planned: int) -> None:
            bar.update(done - bar.n)

        yield report


def run_remote_certify(args: argparse.Namespace) -> int:
    """``hycas certify --server URL``: the same request through :mod:`service.client`, the
    service's own result printed as a local one is."""
    import httpx
    from tqdm import tqdm

    from service.client import APIError, Client, Job, JobFailed
    from workers.certification import CertificationReport

    options = {
        "version": args.model_version,
        "methods": args.methods,
        "sigma": args.sigma,
        "alpha": args.alpha,
        "n0": args.n0,
        "n": args.n,
        "batch_size": args.batch_size,
        "ensemble": args.ensemble,
        "target_radius": args.target_radius,
        "seed": args.seed,
        "strict": args.strict,
    }
    interactive = sys.stderr.isatty() and not args.quiet
    with (
        Client(args.server, api_key=args.api_key) as client,
        tqdm(total=100, unit="%", file=sys.stderr, disable=not interactive, leave=False) as bar,
    ):

        def show(job: Job) -> None:
            bar.set_description(job.status)
            bar.update(round(100 * job.progress) - bar.n)

        try:
            result = client.certify(args.image, args.model, progress=show, **options)
        except OSError as error:
            print(f"hycas: error: cannot read {args.image}: {error.strerror}", file=sys.stderr)
            return 2
        except APIError as error:
            print(f"hycas: error: {error.message} ({error.status} {error.code})", file=sys.stderr)
            return 2
        except JobFailed as error:
            print(f"hycas: error: {error}", file=sys.stderr)
            return 1
        except httpx.HTTPError as error:
            print(f"hycas: error: cannot reach {args.server}: {error}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(result.raw, indent=2))
    else:
        _print_report(CertificationReport.model_validate(result.raw))
    return 0


def run_certify(args: argparse.Namespace) -> int:
    if args.server is not None:
        return run_remote_certify(args)
    from service.core.config import Settings
    from service.errors import ServiceError
    from service.job_inputs import ImageUpload, decode_upload, resolve_parameters, strict_inputs
    from service.schemas import CertifyOptions
    from workers.certification import certify_image
    from workers.model_cache import ModelCache, RepositorySource

    settings = Settings()
    try:
        data = Path(args.image).read_bytes()
    except OSError as error:
        print(f"hycas: error: cannot read {args.image}: {error.strerror}", file=sys.stderr)
        return 2
    source = RepositorySource(settings.model_repository, settings.model_cache_dir)
    models = ModelCache(source, settings.device)
    try:
        loaded = models.get(args.model, args.model_version)
        # The command's options are the API's, by the same names (--model-version is read above).
        names = [name for name in CertifyOptions.model_fields if name != "version"]
        options = CertifyOptions(**{name: getattr(args, name) for name in names})
        parameters = resolve_parameters(options, loaded, settings)
        upload = ImageUpload(data=data, array=None, filename=Path(args.image).name)
        strict = strict_inputs(options, settings)
        decoded = decode_upload(upload, loaded, settings.max_image_pixels, strict=strict)
    except ServiceError as error:
        # Refused values, unknown and unusable models reach ``main``, which prints one line.
        print(f"hycas: error: {error.message}", file=sys.stderr)
        return 2
    import time

    import torch

    with certification_progress(
        Path(args.image).name, loaded, parameters, quiet=args.quiet
    ) as progress:
        report = certify_image(
            loaded,
            torch.from_numpy(decoded.tensor),
            parameters,
            decoded.description,
            progress=progress,
            deadline=time.monotonic() + settings.task_time_limit_seconds,
        )
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        _print_report(report)
    return 0


def _methods(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_service_commands(sub: argparse._SubParsersAction) -> None:
    """``serve``, ``worker`` and ``certify`` on the ``hycas`` parser."""
    from workers.methods import DEFAULT_METHODS, REGISTRY

    serve = sub.add_parser(
        "serve",
        help="run the HTTP API (embedded job runner unless HYCAS_REDIS_URL is set)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    serve.add_argument("--port", type=tcp_port, default=8000, help="default 8000")
    serve.set_defaults(handler=run_serve)

    worker = sub.add_parser("worker", help="run a Celery certification worker (needs Redis)")
    worker.add_argument(
        "--concurrency", type=int, default=None, help="processes (default HYCAS_WORKER_POOL_SIZE)"
    )
    worker.add_argument(
        "--pool",
        choices=["prefork", "solo", "threads"],
        default=None,
        help="Celery pool (default: threads running HYCAS_WORKER_JOBS_PER_PROCESS jobs in one "
        "process; prefork when --concurrency is above 1)",
    )
    worker.add_argument(
        "--metrics-port",
        type=tcp_port,
        default=None,
        help="serve /metrics here (HYCAS_WORKER_METRICS_PORT)",
    )
    worker.add_argument("--hostname", default=None, help="Celery node name")
    worker.set_defaults(handler=run_worker)

    certify = sub.add_parser(
        "certify",
        help="certify one image file with a model: here, or on a service with --server",
    )
    certify.add_argument("image", help="PNG, JPEG, NPY or DICOM file")
    certify.add_argument("--model", required=True, help="model id, e.g. digits-hycas")
    certify.add_argument("--model-version", default=None, help="default: the latest")
    certify.add_argument(
        "--methods",
        type=_methods,
        default=None,
        help=f"comma-separated, of {', '.join(REGISTRY)} (default {','.join(DEFAULT_METHODS)})",
    )
    certify.add_argument("--sigma", type=float, default=None, help="default: the card's sigma")
    certify.add_argument("--alpha", type=float, default=None)
    certify.add_argument("--n0", type=int, default=None)
    certify.add_argument("--n", type=int, default=None)
    certify.add_argument("--batch-size", type=int, default=None)
    certify.add_argument("--ensemble", type=int, default=None)
    certify.add_argument("--target-radius", type=float, default=None)
    certify.add_argument("--seed", type=int, default=None)
    certify.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="refuse an image that does not fit the model card's intended input, instead of "
        "warning (default HYCAS_STRICT_INPUTS)",
    )
    certify.add_argument("--json", action="store_true", help="print the full result as JSON")
    certify.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="certify on this service (e.g. http://127.0.0.1:8000) instead of here",
    )
    certify.add_argument(
        "--api-key",
        default=os.environ.get("HYCAS_API_KEY"),
        help="with --server: the X-API-Key to send (default $HYCAS_API_KEY)",
    )
    certify.add_argument("--quiet", action="store_true", help="no progress bar")
    certify.set_defaults(handler=run_certify)
