"""pyproject.toml's ``[project] version`` is the one source of the version.

``llmcanary.__version__`` reads it from the installed distribution's metadata; the places
that cannot read it (the chart's appVersion, the image's ``ARG VERSION`` default) keep a
literal copy, and these tests fail when a copy drifts from pyproject.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

import llmcanary

ROOT = Path(__file__).resolve().parents[2]


def pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def test_the_package_reports_the_pyproject_version() -> None:
    assert llmcanary.__version__ == pyproject_version(), (
        "the installed metadata is stale: reinstall (pip install -e '.[dev]')"
    )


def test_the_chart_app_version_is_the_pyproject_version() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "llmcanary" / "Chart.yaml").read_text())
    # The chart's own `version` is Helm's version of the chart and may move on its own.
    assert chart["appVersion"] == pyproject_version()


def test_the_dockerfile_version_is_the_pyproject_version() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [default] = re.findall(r"^ARG VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert default == pyproject_version()
    # The build command in its header comment too.
    tags = re.findall(r"docker build -t llmcanary:(\S+?) ", dockerfile)
    assert tags and set(tags) == {pyproject_version()}


def test_the_dev_distribution_is_versioned_with_the_operator() -> None:
    # llmcanary-dev drives this repository's operator: the two are released together.
    with (ROOT / "dev" / "pyproject.toml").open("rb") as f:
        assert tomllib.load(f)["project"]["version"] == pyproject_version()
