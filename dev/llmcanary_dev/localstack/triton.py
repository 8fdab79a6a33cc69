"""The ``tritonserver`` shipped inside the ``nvidia-pytriton`` wheel, made runnable here.

The wheel carries Triton 2.51 (CPU-capable), its Python backend, and one Python backend
stub per Python version. A Triton install for this machine needs three things the wheel
leaves to its own launcher:

- a backend directory whose ``python/`` holds the backend library *and* the stub built
  for this interpreter's version (the backend looks for the stub beside itself);
- ``LD_LIBRARY_PATH`` with this interpreter's ``libpython`` (the stub links it);
- the environment's site-packages on ``PYTHONPATH``: the stub's embedded interpreter
  ignores that variable, and ``model_repo``'s models honour it themselves.

Only paths are looked up here: ``pytriton`` is never imported (it would pull numpy and
more into the operator's process), see the import-linter contract in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TritonInstall", "TritonNotInstalled", "find_triton"]


class TritonNotInstalled(RuntimeError):
    """``nvidia-pytriton`` (and so ``tritonserver``) is missing from this environment."""


@dataclass(frozen=True)
class TritonInstall:
    server: Path
    backends: Path
    env: dict[str, str]

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The process environment for one ``tritonserver``."""
        env = {**os.environ, **(extra or {})}
        for key, value in self.env.items():
            current = env.get(key)
            env[key] = value if not current else f"{value}{os.pathsep}{current}"
        return env


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def find_triton(work_dir: Path) -> TritonInstall:
    """Locate the wheel's Triton and assemble its backend directory under ``work_dir``."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalled(
            "nvidia-pytriton is not installed in this environment: "
            "pip install -e '.[model]' (make demo and make test do it)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    server = root / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    for needed in (server, stub, root / "backends" / "python" / "libtriton_python.so"):
        if not needed.is_file():
            raise TritonNotInstalled(f"{needed} is missing from the nvidia-pytriton wheel")
    python_dir = work_dir / "backends" / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in (root / "backends" / "python").iterdir():
        if item.is_file():
            _link(item, python_dir / item.name)
    _link(stub, python_dir / stub.name)
    paths = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir).is_dir():
        env["LD_LIBRARY_PATH"] = str(libdir)
    return TritonInstall(server=server, backends=work_dir / "backends", env=env)
