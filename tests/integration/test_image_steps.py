"""The operator image's install steps, run here for real (no Docker engine exists here).

The Dockerfile's builder stage runs scripts/build-operator-venv.sh; this module runs the same
script into a fresh virtual environment made from the system python3 (not the shared .venv),
then treats that environment as the image would: llmcanary imported from it alone (no
PYTHONPATH, no checkout), no torch, none of the development stack (llmcanary-dev, dev/) and
only the operator's and the user's commands in ``llmcanary --help``, and a real operator start
against the local cluster with the image's constraints -- a read-only working directory and
$HOME, the environment itself read-only, PYTHONDONTWRITEBYTECODE=1, only $TMPDIR writable.

The build step needs PyPI (pip fetches the dependencies, and setuptools for the wheel build);
without it the first test fails with pip's error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubectl import ROOT, Kubectl, wait_for

from llmcanary.cli.control import COMMANDS

pytestmark = pytest.mark.k8s

SCRIPT = ROOT / "scripts" / "build-operator-venv.sh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "tiny-llm.yaml").read_text())
# Packages of the `model` extra: none may be in the operator's environment.
MODEL_PACKAGES = ("torch", "tritonclient", "pytriton", "triton", "matplotlib", "nvidia")
# The development stack (dev/) and what only it uses: none may be in the operator's environment.
# (aiohttp is: kopf and the Kubernetes client depend on it; llmcanary itself does not.)
DEV_MODULES = ("llmcanary_dev", "rich", "cryptography")
DEV_REQUIREMENTS = ("aiohttp", "rich", "cryptography", "llmcanary-dev")
# The operator's commands and the user's (the kubectl plugin's), nothing else.
IMAGE_COMMANDS = {"run", "crd", "preflight"} | {c.name for c in COMMANDS}
DEV_COMMANDS = {"devcluster", "stack", "demo", "bench"}
# Root ignores file modes; without these capabilities it is held to them like any user.
DROP_OVERRIDES = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: nothing that could point Python at the checkout or .venv."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **extra}


def read_only_prefix() -> list[str]:
    """argv prefix under which mode bits bind this process (root ignores them otherwise)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.fail("running as root needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    return DROP_OVERRIDES


def set_writable(path: Path, writable: bool) -> None:
    """Add or remove every write bit under ``path`` (directories included)."""
    w = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for item in [path, *path.rglob("*")]:
        if item.is_symlink():
            continue
        mode = item.stat().st_mode
        item.chmod((mode | stat.S_IWUSR) if writable else (mode & ~w))


def snapshot(*roots: Path) -> dict[str, float]:
    return {str(p): p.lstat().st_mtime for root in roots for p in [root, *sorted(root.rglob("*"))]}


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = tmp_path_factory.mktemp("image") / "opt-llmcanary"
    # The interpreter this test runs on, outside any virtual environment (not the shared .venv).
    python = getattr(sys, "_base_executable", sys.executable)
    # NEEDS PyPI: the script's pip fetches every dependency (the pip cache makes repeats fast).
    done = subprocess.run(
        ["bash", str(SCRIPT), str(dest)],
        env={**clean_env(PYTHON=python), "HOME": os.environ.get("HOME", "/root")},
        cwd=tmp_path_factory.getbasetemp(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    print(done.stdout)
    assert done.returncode == 0, (
        f"{SCRIPT.name} failed (it needs PyPI for the dependencies):\n{done.stdout}{done.stderr}"
    )
    # As in the image: nothing may write into the environment at run time.
    set_writable(dest, False)
    yield dest
    set_writable(dest, True)


def venv_run(
    venv: Path, *argv: str, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        env=clean_env(PYTHONDONTWRITEBYTECODE="1"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_version_and_help_come_from_the_installed_wheel(image_venv: Path, tmp_path: Path) -> None:
    assert venv_run(image_venv, "llmcanary", "--version", cwd=tmp_path).stdout.split()[-1] == (
        VERSION
    )
    assert (
        "--all-namespaces"
        in venv_run(image_venv, "llmcanary", "run", "--help", cwd=tmp_path).stdout
    )
    where = venv_run(
        image_venv, "python", "-c", "import llmcanary; print(llmcanary.__file__)", cwd=tmp_path
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(image_venv.resolve()), where
    assert not Path(where).resolve().is_relative_to(ROOT), where
    # A wheel, not an editable install: no path hooks back into a checkout.
    site = Path(where).resolve().parents[1]
    assert not list(site.glob("__editable__*")) and not list(site.glob("*.egg-link"))


def test_no_torch_nor_any_model_package(image_venv: Path, tmp_path: Path) -> None:
    for module in ("torch", "tritonclient", "pytriton", "matplotlib"):
        done = venv_run(image_venv, "python", "-c", f"import {module}", cwd=tmp_path, check=False)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    site = next((image_venv / "lib").glob("python3*/site-packages"))
    offenders = [
        p.name
        for p in site.iterdir()
        if p.name.lower().split("-")[0].split(".")[0] in MODEL_PACKAGES
    ]
    assert offenders == []
    leaked = [str(p) for p in image_venv.rglob("*") if {"torch", "triton"} & set(p.parts)]
    assert leaked == []


def test_no_development_stack_and_only_the_operator_commands(
    image_venv: Path, tmp_path: Path
) -> None:
    for module in DEV_MODULES:
        done = venv_run(image_venv, "python", "-c", f"import {module}", cwd=tmp_path, check=False)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    metadata = venv_run(
        image_venv,
        "python",
        "-c",
        "import json, importlib.metadata as m\n"
        "print(json.dumps({\n"
        "    'requires': m.requires('llmcanary') or [],\n"
        "    'dists': sorted(d.metadata['Name'] for d in m.distributions()),\n"
        "    'plugins': [e.name for e in m.entry_points(group='llmcanary.commands')],\n"
        "}))",
        cwd=tmp_path,
    )
    found = json.loads(metadata.stdout)
    names = [
        re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0].lower()
        for r in found["requires"]
        if "extra ==" not in r
    ]
    assert not set(names) & set(DEV_REQUIREMENTS), names
    assert "llmcanary-dev" not in [d.lower() for d in found["dists"]]
    assert found["plugins"] == []
    shown = venv_run(image_venv, "llmcanary", "--help", cwd=tmp_path).stdout
    section = shown.split("Commands:", 1)[1]
    listed = {line.split()[0] for line in section.splitlines() if line.startswith("  ")}
    assert listed == IMAGE_COMMANDS, shown
    assert not listed & DEV_COMMANDS
    for command in sorted(DEV_COMMANDS):
        done = venv_run(image_venv, "llmcanary", command, "--help", cwd=tmp_path, check=False)
        assert done.returncode == 2 and "No such command" in done.stderr, command


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A read-only cwd and HOME, a writable TMPDIR: the image's filesystem."""
    dirs = {name: tmp_path / name for name in ("cwd", "home", "tmp")}
    for path in dirs.values():
        path.mkdir()
    dirs["cwd"].chmod(0o555)
    dirs["home"].chmod(0o555)
    yield dirs
    dirs["cwd"].chmod(0o755)
    dirs["home"].chmod(0o755)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_installed_operator_reconciles_with_a_read_only_filesystem(
    image_venv: Path,
    sandbox: dict[str, Path],
    kubectl: Kubectl,
    crd: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    prefix = read_only_prefix()
    env = clean_env(
        KUBECONFIG=str(kubectl.kubeconfig),
        HOME=str(sandbox["home"]),
        TMPDIR=str(sandbox["tmp"]),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        LLMCANARY_RESYNC_SECONDS="2",
    )
    # The sandbox holds: the process can write neither its cwd, nor HOME, nor the venv.
    probe = subprocess.run(
        [
            *prefix,
            str(image_venv / "bin" / "python"),
            "-c",
            "import pathlib, sys\n"
            "for d in sys.argv[1:]:\n"
            "    try:\n"
            "        (pathlib.Path(d) / 'probe').write_text('x')\n"
            "    except PermissionError:\n"
            "        continue\n"
            "    sys.exit(f'{d} is writable')\n",
            str(sandbox["cwd"]),
            str(sandbox["home"]),
            str(image_venv / "bin"),
            str(next((image_venv / "lib").glob("python3*/site-packages"))),
        ],
        env=env,
        cwd=sandbox["cwd"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    before = snapshot(image_venv, sandbox["cwd"], sandbox["home"])

    port = free_port()
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *prefix,
                str(image_venv / "bin" / "llmcanary"),
                "run",
                "-n",
                namespace,
                "--log-format",
                "json",
                "--liveness",
                f"http://127.0.0.1:{port}/healthz",
            ],
            env=env,
            cwd=sandbox["cwd"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        kubectl.apply(EXAMPLE, namespace)
        name = EXAMPLE["metadata"]["name"]

        def stable() -> dict[str, Any] | None:
            assert proc.poll() is None, f"the operator exited:\n{log_path.read_text()}"
            obj = kubectl.get("llmd", name, namespace)
            if obj is None:
                return None
            status = obj.get("status", {})
            caught_up = status.get("observedGeneration") == obj["metadata"]["generation"]
            return obj if status.get("phase") == "Stable" and caught_up else None

        # A fresh LLMDeployment on the simulated GPU nodes goes straight to Stable; its
        # status, with observedGeneration caught up, is written by the installed operator.
        obj = wait_for("the installed operator to reach Stable", stable, timeout=90)
        assert obj["status"]["stableRevision"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            assert reply.status == 200
        # Deleted while the operator runs: its finalizer comes off and the namespace can go.
        kubectl.run("delete", "llmd", name, "-n", namespace, "--wait=true", "--timeout=60s")
    finally:
        # SIGTERM, as the kubelet sends it: the operator must exit well within a pod's
        # grace period (kopf waits up to 5 s for its tasks, then runs the cleanup).
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("the operator did not exit within 20 s of SIGTERM")
        finally:
            print(f"--- operator log (tail) ---\n{log_path.read_text()[-3000:]}")
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    assert lines, "the operator logged nothing"
    records = [json.loads(line) for line in lines]  # --log-format json: every line an object
    assert not [r for r in records if r.get("severity") in {"error", "fatal"}]
    # Nothing was written into the venv, the working directory or HOME.
    assert snapshot(image_venv, sandbox["cwd"], sandbox["home"]) == before
