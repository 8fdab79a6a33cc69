"""One child process of the local stack: started with its output in a log file in its own
process group, stopped with SIGTERM to the leader (a Triton whose stubs were signalled
too would wait on them until its exit timeout), then SIGKILL to the whole group so that
nothing it spawned (the Python backend's stubs) outlives it.

A pod's container logs as a container runtime does (``cri_log``): each line stamped in
the CRI format (``<RFC 3339 time> stdout F <line>``), which is what KWOK's server reads
for ``kubectl logs``; :meth:`ManagedProcess.rotate_log` keeps the run that ended beside
it for ``--previous``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

__all__ = ["ManagedProcess", "cri_line", "kill_group", "strip_cri", "tail"]

#: How long a caller that saw the process exit waits for the last of its output.
DRAIN_TIMEOUT_S = 2.0


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def cri_line(line: bytes, when: datetime | None = None) -> bytes:
    """One line of output in the CRI log format: ``<time> stdout F <line>\\n``."""
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.encode() + b" stdout F " + line.rstrip(b"\n") + b"\n"


def strip_cri(text: str) -> str:
    """The output lines of a CRI-format log, without the time, stream and tag."""
    return "\n".join(
        parts[3] if len(parts := line.split(" ", 3)) == 4 else "" for line in text.splitlines()
    )


def _copy_as_cri(source: IO[bytes], log_file: Path) -> None:
    # The pipe is drained to its end whatever happens to the file: a writer that stopped
    # reading would stall the process on a full pipe (or kill it with SIGPIPE).
    with source:
        try:
            with log_file.open("ab") as out:
                for line in iter(source.readline, b""):
                    out.write(cri_line(line))
                    out.flush()
        except OSError:
            for _ in iter(source.readline, b""):
                pass


class ManagedProcess:
    def __init__(self, name: str, log_file: Path, *, cri_log: bool = False) -> None:
        self.name = name
        self.log_file = log_file
        self.cri_log = cri_log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None  # time.monotonic()
        self._copier: threading.Thread | None = None

    @property
    def previous_log_file(self) -> Path:
        """The log of the run before this one (``kubectl logs --previous``)."""
        return self.log_file.with_name(self.log_file.stem + ".previous" + self.log_file.suffix)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.cri_log:
            with self.log_file.open("ab") as out:
                self.proc = self._popen(argv, env, cwd, out)
        else:
            # A new run, a new file: the run before stays in previous_log_file.
            self.log_file.unlink(missing_ok=True)
            self.log_file.touch()
            self.proc = self._popen(argv, env, cwd, subprocess.PIPE)
            assert self.proc.stdout is not None
            self._copier = threading.Thread(
                target=_copy_as_cri,
                args=(self.proc.stdout, self.log_file),
                name=f"log {self.name}",
                daemon=True,
            )
            self._copier.start()
        self.started_at = time.monotonic()

    @staticmethod
    def _popen(
        argv: Sequence[str], env: Mapping[str, str] | None, cwd: Path | None, out: IO[bytes] | int
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )

    def exit_code(self) -> int | None:
        """None while it runs (or was never started). Once it has exited, its output is
        in the log file (a stub it left holding the pipe is waited on DRAIN_TIMEOUT_S)."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is not None and self._copier is not None:
            # What it spawned (a Python backend's stub) would hold the pipe open.
            _signal_group(self.proc.pid, signal.SIGKILL)
            self._copier.join(DRAIN_TIMEOUT_S)
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.running and self.proc is not None:
            self.proc.send_signal(sig)

    def terminate(self) -> subprocess.Popen[bytes] | None:
        """SIGTERM to the group without waiting; returns the process to reap (or None).
        After this, this object may start a new process."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # the leader only: Triton shuts its own stubs down
        return proc

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # the leader only: Triton shuts its own stubs down
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever the leader left in its group (a stub whose server died first).
        _signal_group(proc.pid, signal.SIGKILL)

    def rotate_log(self) -> None:
        """The run that ended is also the previous one from now on: a kubelet serves it
        for ``kubectl logs --previous`` from the moment the container exits, and for
        ``kubectl logs`` until the next run starts (which logs to a new file)."""
        if self.log_file.exists():
            self.previous_log_file.unlink(missing_ok=True)
            os.link(self.log_file, self.previous_log_file)

    def log_tail(self, lines: int = 20) -> str:
        text = tail(self.log_file, lines)
        return strip_cri(text) if self.cri_log else text


def kill_group(pid: int) -> None:
    """SIGKILL whatever is left of a process group."""
    _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
