"""Readers of the files the deployment tests check: compose, Dockerfile, README, .dockerignore."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]


def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


def compose(text: str | None = None) -> dict:
    # PyYAML resolves the YAML merge keys (<<) that the compose schema bindings do not.
    return yaml.safe_load(compose_text() if text is None else text)


def dockerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=(ROOT / "Dockerfile").open("rb"))


def final_stage(instructions: list[dict]) -> list[dict]:
    starts = [i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM"]
    return instructions[starts[-1] :]


def dockerfile_arg_default(name: str) -> str:
    for ins in dockerfile().structure:
        if ins["instruction"] == "ARG" and ins["value"].startswith(f"{name}="):
            return ins["value"].split("=", 1)[1]
    raise AssertionError(f"the Dockerfile has no ARG {name}=<default>")


def copy_sources() -> list[str]:
    """Build-context paths of the Dockerfile's COPY instructions (not those from a stage)."""
    sources = []
    for ins in dockerfile().structure:
        if ins["instruction"] == "COPY" and "--from=" not in ins["value"]:
            sources += [s for s in ins["value"].split()[:-1] if not s.startswith("--")]
    return sources


def hycas_services(services: dict) -> dict[str, dict]:
    """The services that run the image: `hycas serve` or `hycas worker`."""
    return {n: s for n, s in services.items() if (s.get("command") or [""])[0] == "hycas"}


def worker_services(services: dict) -> dict[str, dict]:
    return {n: s for n, s in hycas_services(services).items() if s["command"][1] == "worker"}


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def readme_paragraph(section: str, lead: str) -> str:
    """The paragraph of a README section that starts with `**lead`."""
    match = re.search(rf"^\*\*{re.escape(lead)}.*?(?=\n\n|\Z)", section, re.M | re.S)
    assert match, f"README has no paragraph starting '**{lead}'"
    return match.group(0)


def inline_code(markdown: str) -> list[str]:
    """The `code spans` of a Markdown text outside fenced blocks, whitespace normalized."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def fenced_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, re.M | re.S)


def dockerignore_excludes(path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (the .dockerignore rules).

    As Docker does: patterns use Go's filepath.Match plus `**`, a pattern also matches every
    path under a matched folder, the last matching pattern wins, and `!` re-includes.
    """
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.lstrip("!").strip("/"))
        parts = path.split("/")
        prefixes = ("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)
