"""A keyed, deduplicating, delaying work queue (the shape of client-go's workqueue).

- A key is scheduled at most once: adding it again keeps the earlier of the two times,
  so a burst of watch events for one object becomes one pass.
- A key is handed to one worker at a time. Added while a worker has it, it waits until
  that worker is :meth:`WorkQueue.done`, then runs again: a change seen during a pass is
  never lost and never handled by two workers at once.
- Only tracked keys are accepted: an object is tracked while this operator is
  responsible for it (it exists, and this replica is the active one), so resyncs and
  late events of a deleted object, or of a standby replica, schedule nothing.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: (namespace, name) of an LLMDeployment.
Key = tuple[str, str]


@dataclass(frozen=True)
class QueueStats:
    """What the queue holds at one moment."""

    tracked: int  # objects this operator is responsible for
    depth: int  # keys due now and waiting for a worker
    oldest_wait_seconds: float  # how long the longest-waiting due key has waited (0: none)
    scheduled: int  # keys waiting for a later time (wake-ups and resyncs)
    busy: int  # keys a worker is reconciling now
    longest_busy_seconds: float  # how long the longest pass in progress has run (0: none)
    shortest_busy_seconds: float  # how long the most recent pass in progress has run (0: none)


class WorkQueue:
    """Thread-safe. ``clock`` is monotonic seconds (injected for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._tracked: set[Key] = set()
        self._due: dict[Key, float] = {}  # key -> when it is due (the earliest asked)
        self._heap: list[tuple[float, int, Key]] = []  # (due, seq, key); stale entries skipped
        self._seq = itertools.count()
        self._busy: dict[Key, float] = {}  # key -> when its pass began
        self._closed = False

    # --- what the operator is responsible for ---------------------------------------

    def track(self, key: Key) -> None:
        """Take responsibility for ``key`` and schedule it now."""
        with self._cond:
            self._tracked.add(key)
        self.add(key)

    def untrack(self, key: Key) -> None:
        """Drop ``key``: nothing more is scheduled for it (a pass in progress finishes)."""
        with self._cond:
            self._tracked.discard(key)
            self._due.pop(key, None)  # its heap entry goes stale

    def tracked(self, key: Key) -> bool:
        with self._cond:
            return key in self._tracked

    # --- producers ------------------------------------------------------------------

    def add(self, key: Key, delay: float = 0.0) -> bool:
        """Schedule ``key`` in ``delay`` seconds, unless it is due sooner already.

        False if the key is not tracked (or the queue is closed): nothing was scheduled.
        """
        with self._cond:
            if self._closed or key not in self._tracked:
                return False
            at = self._clock() + max(0.0, delay)
            current = self._due.get(key)
            if current is not None and current <= at:
                return True
            self._due[key] = at
            if key not in self._busy:
                heapq.heappush(self._heap, (at, next(self._seq), key))
                self._cond.notify()
            return True

    # --- consumers ------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Key | None:
        """The next due key, which the caller now owns until :meth:`done`.

        Blocks until one is due; None once the queue is closed, or after ``timeout``.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock()
                wait = self._next_due(now)
                if wait == 0.0:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._busy[key] = now
                    return key
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def _next_due(self, now: float) -> float | None:
        """Seconds until the heap's first live entry is due (0: now); None if empty."""
        while self._heap:
            at, _, key = self._heap[0]
            if self._due.get(key) != at or key in self._busy:
                heapq.heappop(self._heap)  # superseded, dropped, or parked until done()
                continue
            return max(0.0, at - now)
        return None

    def done(self, key: Key) -> None:
        """The caller's pass over ``key`` ended; if it was added meanwhile, it runs again."""
        with self._cond:
            self._busy.pop(key, None)
            at = self._due.get(key)
            if at is not None:
                heapq.heappush(self._heap, (at, next(self._seq), key))
                self._cond.notify()

    def close(self) -> None:
        """Wake every waiting consumer with None; nothing is scheduled any more."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- observing ------------------------------------------------------------------

    def stats(self) -> QueueStats:
        with self._cond:
            now = self._clock()
            waiting = [at for key, at in self._due.items() if key not in self._busy]
            due = [at for at in waiting if at <= now]
            return QueueStats(
                tracked=len(self._tracked),
                depth=len(due),
                oldest_wait_seconds=now - min(due) if due else 0.0,
                scheduled=len(waiting) - len(due),
                busy=len(self._busy),
                longest_busy_seconds=now - min(self._busy.values()) if self._busy else 0.0,
                shortest_busy_seconds=now - max(self._busy.values()) if self._busy else 0.0,
            )
