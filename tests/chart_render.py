"""charts/llmcanary and the helm binary that `make helm-bin` builds: rendered for the unit
tests, installed by tests/integration/test_chart.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from llmcanary_dev.devcluster import Settings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "llmcanary"


def helm_binary() -> Path:
    binary = Settings.from_env().tool("helm")
    if not os.access(binary, os.X_OK):
        raise AssertionError(
            f"{binary} is missing: build it with `make helm-bin` (scripts/ensure-helm.sh)"
        )
    return binary


def helm(
    *args: str, check: bool = True, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run helm; ``env`` (e.g. with KUBECONFIG) for commands that reach a cluster."""
    done = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=None if env is None else dict(env),
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def values_args(values: dict[str, Any] | None, tmp: Path) -> list[str]:
    if not values:
        return []
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def render(
    tmp: Path, values: dict[str, Any] | None = None, namespace: str = "llmcanary"
) -> list[dict[str, Any]]:
    """The objects `helm template` renders (not the crds/ directory), parsed."""
    out = helm("template", "llmcanary", str(CHART), "-n", namespace, *values_args(values, tmp))
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, namespace: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects rendered"
    return found[0]
