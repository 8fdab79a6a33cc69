"""llmcanary: canary rollouts of LLMs served by NVIDIA Triton, as a Kubernetes operator."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    # pyproject.toml's [project] version is the one source (tests/unit/test_version.py keeps
    # the literal copies, Chart.yaml's appVersion and the Dockerfile's VERSION, equal to it).
    __version__ = _version("llmcanary")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

del PackageNotFoundError, _version
