"""The ``hycas`` command line.

Each subcommand is a thin shell over library code in ``models``, ``certify`` and ``workers``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

# libgomp's waiting threads spin by default: on a host whose cores are busy with other work (a
# shared machine, a container with a CPU quota) that makes torch an order of magnitude slower,
# and sleeping waiters cost nothing when the cores are free. Set before anything loads torch;
# an OMP_WAIT_POLICY in the environment is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from service.commands import add_service_commands
from service.model_commands import add_model_commands, parse_shape
from workers.version import package_version

DEFAULT_DESCRIBE_SHAPE = (1, 28, 28)


def _print_network(summary: dict, bound: str) -> None:
    print(f"  parameters: {summary['trainable_parameters']:,} trainable")
    print(f"  certified L2 Lipschitz bound (every draw of the randomness): {bound}")
    for name, bound in summary.get("layer_bounds", {}).items():  # a network with no bound: none
        print(f"    {name:<40} {bound:.6f}")


UNTRAINED_NOTE = (
    "This network is untrained (fresh weights from a fixed seed). Its bound is computed from "
    "its weights: each hybrid block mixes its branches' bounds with learned convex weights and "
    "a learned residual step, so a trained model of the same shape has a different bound (at "
    "most 2, recorded on its card). For a packaged model: hycas describe --model ID."
)


def _describe_untrained(args: argparse.Namespace) -> int:
    from models import build_hycas

    shape = args.input_shape or DEFAULT_DESCRIBE_SHAPE
    summary = build_hycas(input_shape=shape, num_classes=args.num_classes).describe()
    if args.json:
        print(json.dumps({**summary, "trained": False, "note": UNTRAINED_NOTE}, indent=2))
        return 0
    print(
        f"HyCAS for input {summary['input_shape']} with {summary['num_classes']} classes "
        "(untrained)"
    )
    _print_network(summary, f"{summary['lipschitz_bound']:.6f}")
    print(textwrap.fill(UNTRAINED_NOTE, width=92))
    return 0


def _describe_package(args: argparse.Namespace) -> int:
    import models

    try:
        model, card = models.load(args.model, version=args.version, repository=args.repository)
    except models.ModelIntegrityError as error:
        raise ValueError(f"{args.model} cannot be used: {error}") from None
    summary = model.describe()
    if args.json:
        described = {
            "id": card.id,
            "version": card.version,
            **summary,
            "card_lipschitz_bound": card.lipschitz_bound,
            "class_names": list(card.class_names),
            "sigma": card.sigma,
            "dataset": card.dataset.name,
            "sha256": card.sha256,
        }
        print(json.dumps(described, indent=2))
        return 0
    architecture = "HyCAS" if card.architecture == "hycas" else card.architecture
    print(
        f"{card.id} v{card.version}: {architecture} for input {summary['input_shape']} with "
        f"{summary['num_classes']} classes ({', '.join(card.class_names)})"
    )
    print(f"  trained on {card.dataset.name} for smoothing at σ = {card.sigma:g}")
    print(f"  weights sha256 {card.sha256}")
    if summary["lipschitz_bound"] is None:
        bound = "none (certified by smoothing only; no margin certificate)"
    else:
        bound = (
            f"{card.lipschitz_bound} (its card; recomputed from these weights: "
            f"{summary['lipschitz_bound']:.6f})"
        )
    _print_network(summary, bound)
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    if args.model is not None:
        if args.input_shape is not None:
            raise ValueError("--input-shape is the packaged model's own; give one or the other")
        return _describe_package(args)
    return _describe_untrained(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hycas",
        description="HyCAS Certify: certified L2 robustness for image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"hycas {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    describe = sub.add_parser(
        "describe",
        help="a packaged model (--model), or an untrained HyCAS network: layers and bound",
    )
    describe.add_argument("--model", help="a packaged model id, e.g. digits-hycas")
    describe.add_argument("--version", help="its version (default: the latest)")
    describe.add_argument(
        "--repository",
        help="model repository (default $HYCAS_MODEL_REPOSITORY, else the shipped one)",
    )
    describe.add_argument(
        "--input-shape",
        type=parse_shape,
        default=None,
        help="C,H,W of an untrained network (default 1,28,28)",
    )
    describe.add_argument("--num-classes", type=int, default=10)
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.set_defaults(handler=_cmd_describe)
    add_service_commands(sub)
    add_model_commands(sub)
    return parser


def error_line(error: Exception) -> str:
    """``error`` as one line a person can act on; pydantic's report as ``--option: problem``."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return "; ".join(
            f"--{str(item['loc'][0]).replace('_', '-')}: "
            f"{item['msg'][:1].lower()}{item['msg'][1:]} (got {item['input']!r})"
            for item in error.errors()
        )
    return " ".join(str(error).split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    # The commands say what happened themselves; log records are shown by the commands that
    # configure logging (serve, worker), not printed a second time by Python's last resort.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        return args.handler(args)
    except (ValueError, LookupError, OSError) as error:
        # Refused values, unknown models or versions, and files, folders or hosts that cannot
        # be read or written; KeyError and IndexError are bugs.
        if isinstance(error, KeyError | IndexError):
            raise
        print(f"hycas: error: {error_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
