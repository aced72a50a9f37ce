"""The image's HEALTHCHECK, for both roles the image runs.

`hycas serve` is healthy when its `/healthz` answers 200 on its `--port` (default 8000);
`hycas worker` when its metrics server answers `/metrics` on `--metrics-port` or
HYCAS_WORKER_METRICS_PORT (the image sets 9808). The role and ports are read from the
command line of the container's `hycas` process, so the same check works for both roles
and behind an init process. Standard library only: it runs outside the project's venv.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

ROLES = ("serve", "worker")
PROC = Path("/proc")


def hycas_command(proc: Path = PROC) -> list[str] | None:
    """Arguments after `hycas` of the oldest `hycas serve|worker` process, or None."""
    pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    for pid in pids:
        try:
            argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        for i, arg in enumerate(args[:-1]):
            if Path(arg).name == "hycas" and args[i + 1] in ROLES:
                return args[i + 1 :]
    return None


def option(args: Sequence[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE`; the last one wins, as in argparse."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def probe_url(args: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The URL that answers 200 when this `hycas` command is healthy; None: nothing to probe."""
    if args[0] == "serve":
        return f"http://127.0.0.1:{option(args, '--port') or 8000}/healthz"
    port = option(args, "--metrics-port") or env.get("HYCAS_WORKER_METRICS_PORT")
    return f"http://127.0.0.1:{port}/metrics" if port else None


def main(proc: Path = PROC, env: Mapping[str, str] = os.environ) -> int:
    args = hycas_command(proc)
    if args is None:
        print("unhealthy: no `hycas serve` or `hycas worker` process", file=sys.stderr)
        return 1
    url = probe_url(args, env)
    if url is None:
        print("healthy: worker running (no metrics port to probe)", file=sys.stderr)
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            healthy = response.status == 200
    except OSError as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
