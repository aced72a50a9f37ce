"""``hycas certify`` refusals that need no model, and the commands' flags."""

from __future__ import annotations

from service.cli import build_parser, main


def test_certify_refuses_a_missing_file(tmp_path, capsys):
    assert main(["certify", str(tmp_path / "absent.png"), "--model", "digits-hycas"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_service_commands_parse():
    parser = build_parser()
    serve = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert (serve.host, serve.port) == ("0.0.0.0", 9000)
    worker = parser.parse_args(["worker", "--concurrency", "2", "--pool", "solo"])
    assert (worker.concurrency, worker.pool) == (2, "solo")
    certify = parser.parse_args(
        ["certify", "x.png", "--model", "m", "--methods", "margin,smoothing", "--n", "10"]
    )
    assert certify.methods == ["margin", "smoothing"] and certify.n == 10
