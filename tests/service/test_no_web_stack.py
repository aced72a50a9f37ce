"""Decoding images and ``hycas certify`` run without the web stack: the domain exceptions
are apart from their HTTP mapping (``service.api.errors``). Each check is a fresh interpreter,
so modules other tests imported do not count."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
WEB_STACK = ("fastapi", "starlette")

LOADED_WEB_MODULES = f"""
import atexit, sys
atexit.register(
    lambda: print(sorted(m for m in sys.modules if m.split(".")[0] in {WEB_STACK!r}))
)
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HYCAS_")}
    return subprocess.run(
        [sys.executable, "-c", LOADED_WEB_MODULES + code],
        capture_output=True,
        text=True,
        cwd=REPOSITORY_ROOT,
        env=environment,
        timeout=300,
    )


def web_modules(result: subprocess.CompletedProcess[str]) -> list[str]:
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_importing_the_client_the_decoders_and_the_commands_loads_no_web_stack():
    result = run_python(
        # The client first: alone it loads httpx and nothing of torch, numpy or pydantic.
        "import sys, service.client\n"
        "print(sorted({'torch', 'numpy', 'pydantic'} & set(sys.modules)))\n"
        "import service.imaging, service.commands, service.job_inputs\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "[]"
    assert web_modules(result) == []


def test_the_errors_module_is_free_of_the_web_stack_and_the_handlers_are_not():
    assert web_modules(run_python("import service.errors")) == []
    assert "fastapi" in web_modules(run_python("import service.api.errors"))


def test_hycas_certify_runs_without_the_web_stack():
    result = run_python(
        "from service.cli import main\n"
        "code = main(['certify', 'examples/digit.png', '--model', 'digits-hycas',"
        " '--methods', 'margin'])\n"
        "print('exit', code)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "exit 0" in result.stdout and "margin" in result.stdout
    assert web_modules(result) == []


def test_reading_a_job_record_loads_no_decoder():
    # Workers read InputDescription from the imaging package; its decoders load on first use.
    code = "import sys, workers.jobs\nprint(sorted({'PIL', 'pydicom'} & set(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPOSITORY_ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
