"""The ``hycas`` command line.

Each subcommand is a thin shell over library code in ``models``, ``certify`` and ``workers``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from service.commands import add_service_commands
from service.model_commands import add_model_commands
from workers.version import package_version


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not C,H,W (e.g. 1,28,28)") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"shape {text!r} has {len(parts)} numbers; want C,H,W")
    return parts  # type: ignore[return-value]


def _cmd_describe(args: argparse.Namespace) -> int:
    from models import build_hycas

    model = build_hycas(input_shape=args.input_shape, num_classes=args.num_classes)
    summary = model.describe()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"HyCAS for input {summary['input_shape']} with {summary['num_classes']} classes")
        print(f"  parameters: {summary['trainable_parameters']:,} trainable")
        print(
            f"  certified L2 Lipschitz bound (every draw of the randomness): "
            f"{summary['lipschitz_bound']:.6f}"
        )
        for name, bound in summary["layer_bounds"].items():
            print(f"    {name:<40} {bound:.6f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hycas",
        description="HyCAS Certify: certified L2 robustness for image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"hycas {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    describe = sub.add_parser(
        "describe", help="build a HyCAS network and print its layers and certified bound"
    )
    describe.add_argument(
        "--input-shape",
        type=_parse_shape,
        default=(1, 28, 28),
        help="C,H,W of the input (default 1,28,28)",
    )
    describe.add_argument("--num-classes", type=int, default=10)
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.set_defaults(handler=_cmd_describe)
    add_service_commands(sub)
    add_model_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except ValueError as exc:
        print(f"hycas: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
