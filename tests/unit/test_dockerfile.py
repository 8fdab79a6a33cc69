"""The operator image's Dockerfile, read as data (no Docker engine runs here).

tests/integration/test_image_steps.py runs the install script the builder stage runs; this
module checks that the Dockerfile really is that script plus a runtime stage that only copies
its result, as a non-root user, without the model's packages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "scripts/build-operator-venv.sh"
VENV = "/opt/llmcanary"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return out


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, f"unreadable FROM {rest!r}"
            stages.append(Stage(match[1], match[2] or str(len(stages))))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), value)


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def stages(dockerfile: str) -> tuple[dict[str, str], list[Stage]]:
    return parse(dockerfile)


def test_multi_stage_on_the_same_slim_python_base(
    stages: tuple[dict[str, str], list[Stage]],
) -> None:
    args, found = stages
    assert len(found) >= 2
    bases = {expand(s.base, args) for s in found}
    # One base: the venv's bin/python points at the base image's interpreter.
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_builder_runs_the_install_script_into_the_venv(
    stages: tuple[dict[str, str], list[Stage]],
) -> None:
    _, found = stages
    builder = found[0]
    runs = builder.all("RUN")
    assert any(SCRIPT in run and run.rstrip().endswith(VENV) for run in runs), runs
    # The sources the script builds from are what the builder copies, and nothing else.
    copied = {src for copy in builder.all("COPY") for src in copy.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "operator/", SCRIPT}


def test_runtime_stage_only_copies_the_venv(stages: tuple[dict[str, str], list[Stage]]) -> None:
    _, found = stages
    runtime = found[-1]
    assert runtime.all("RUN") == [], "the runtime stage installs nothing of its own"
    assert runtime.all("ADD") == []
    assert runtime.all("COPY") == [f"--from={found[0].name} {VENV} {VENV}"]


def test_runs_as_numeric_non_root_user(stages: tuple[dict[str, str], list[Stage]]) -> None:
    _, found = stages
    users = found[-1].all("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert gid.isdigit() and int(gid) != 0, users[-1]
    assert (int(uid), int(gid)) == (65532, 65532)


def test_entrypoint_is_the_operator(stages: tuple[dict[str, str], list[Stage]]) -> None:
    _, found = stages
    runtime = found[-1]
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["llmcanary"]
    (cmd,) = runtime.all("CMD")
    argv = json.loads(cmd)
    assert argv[:4] == ["run", "--all-namespaces", "--log-format", "json"]
    # The liveness endpoint is on the port the image exposes.
    assert "http://0.0.0.0:8080/healthz" in argv
    exposed = {p for expose in runtime.all("EXPOSE") for p in expose.split()}
    assert {"8080", "8090"} <= exposed
    env = " ".join(runtime.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert f"PATH={VENV}/bin:" in env


def test_oci_labels(stages: tuple[dict[str, str], list[Stage]]) -> None:
    _, found = stages
    labels = " ".join(found[-1].all("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_no_torch_in_the_image(dockerfile: str) -> None:
    # Instructions only: the comments may say what is left out.
    text = " ".join(args for _, args in instructions(dockerfile)).lower()
    for banned in ("torch", "tritonclient", "pytriton", "matplotlib", "[model]", ".[", "-e "):
        assert banned not in text, banned
    script = (ROOT / SCRIPT).read_text()
    # The script installs the wheel alone (no extras) and refuses a venv holding these.
    assert re.search(r'pip install .*"\$\{wheels\[0\]\}"\s*$', script, re.MULTILINE)
    for banned in ("torch", "tritonclient", "pytriton", "matplotlib"):
        assert f'"{banned}"' in script, banned


def test_dockerignore_sends_only_what_the_builder_copies(
    stages: tuple[dict[str, str], list[Stage]],
) -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allowlist: everything is ignored unless re-included"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    _, found = stages
    copied = {src for copy in found[0].all("COPY") for src in copy.split()[:-1]}
    assert allowed == copied
    for never in (".venv", ".devcluster", ".localstack", "tests", "model_repo", ".cache"):
        assert not any(a.rstrip("/") == never or a.startswith(never + "/") for a in allowed)
    assert "**/__pycache__" in lines
