"""Detached component processes: start one, find it again from its pid file, stop it.

Each component runs in its own session (``start_new_session=True``), so it outlives
the Python process that started it (``llmcanary devcluster up`` returns) and can be
stopped as a whole process group. Its output goes to ``<state>/logs/<name>.log``,
its pid to ``<state>/pids/<name>.pid``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from llmcanary_dev.devcluster.paths import Settings

__all__ = ["log_tail", "running_pid", "start", "stop"]

log = logging.getLogger(__name__)

# Popen objects of the children this Python process started. Holding them keeps
# Python from warning that they still run; stop() reaps the ones that exit.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.pids_dir / f"{name}.pid"


def _proc_is_ours() -> bool:
    """Whether ``/proc`` describes this process's pid namespace.

    CI sandboxes run in a chroot without ``/proc``, or with the host's ``/proc`` in
    a different pid namespace; there ``/proc/<pid>`` says nothing about our pids.
    """
    try:
        return int(Path("/proc/self/stat").read_text().split()[0]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` is a live (non-zombie) process running component ``name``."""
    child = _children.get(pid)
    if child is not None:
        # Our own child: poll() is authoritative (and reaps it when it exited).
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: /proc decides below, where it can
    if not _proc_is_ours():
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    # The pid may have been reused since the file was written: check argv[0], or the
    # module of a ``python -m`` component.
    words = [word.decode(errors="replace") for word in cmdline]
    if words and Path(words[0]).name == name:
        return True
    return len(words) > 2 and words[1] == "-m" and _module_component(words[2]) == name


def _module_component(module: str) -> str:
    """The component a ``python -m`` module runs: its last part, ``_`` as ``-``."""
    return module.rsplit(".", 1)[-1].replace("_", "-")


def running_pid(settings: Settings, name: str) -> int | None:
    """The pid of component ``name`` if it runs, else None (and a stale pid file is removed)."""
    path = _pid_file(settings, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if _alive(pid, name):
        return pid
    path.unlink(missing_ok=True)
    return None


def _inherited_env() -> dict[str, str]:
    # etcd reads every ETCD_* variable as a flag: a developer's own ETCD_DATA_DIR
    # or ETCD_LISTEN_CLIENT_URLS must not reconfigure the cluster's etcd.
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}


def start(
    settings: Settings,
    name: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    module: str | None = None,
) -> int:
    """Start ``<bin>/<name> args...`` detached, or ``python -m module args...`` (a Python
    component, ``module``'s last part being ``name``); return its pid."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    settings.pids_dir.mkdir(parents=True, exist_ok=True)
    if module is not None and _module_component(module) != name:
        raise ValueError(f"module {module} does not run component {name}")
    program = [sys.executable, "-m", module] if module else [str(settings.tool(name))]
    argv = [*program, *args]
    log_path = settings.logs_dir / f"{name}.log"
    log.debug("starting %s", " ".join(argv))
    with log_path.open("ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.state_dir,
            env={**_inherited_env(), **(env or {})},
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    _pid_file(settings, name).write_text(f"{proc.pid}\n")
    log.info("started %s (pid %d, log %s)", name, proc.pid, log_path)
    return proc.pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The component leads its own session, so its pid is its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(settings: Settings, names: Iterable[str], *, timeout: float = 15.0) -> list[str]:
    """SIGTERM the process groups of ``names``, SIGKILL what is left after ``timeout``.

    Returns the names that were running. Idempotent.
    """
    pids = {n: p for n in names if (p := running_pid(settings, n)) is not None}
    for name, pid in pids.items():
        log.info("stopping %s (pid %d)", name, pid)
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pending = dict(pids)
    while pending and time.monotonic() < deadline:
        pending = {n: p for n, p in pending.items() if _alive(p, n)}
        if pending:
            time.sleep(0.1)
    for name, pid in pending.items():
        log.warning("%s (pid %d) did not stop in %.0fs; killing it", name, pid, timeout)
        _signal_group(pid, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < kill_deadline:
        pending = {n: p for n, p in pending.items() if _alive(p, n)}
        if pending:
            time.sleep(0.05)
    for name in pids:
        _pid_file(settings, name).unlink(missing_ok=True)
    return list(pids)


def log_tail(settings: Settings, name: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a component's log (for error messages)."""
    path = settings.logs_dir / f"{name}.log"
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
