"""A fixed number of worker threads that drain a :class:`WorkQueue` into a reconcile function.

The reconcile function is synchronous (the Kubernetes and Prometheus clients are), so
each pass runs on one of ``workers`` threads; how many objects exist changes how often a
thread is busy, never how many there are. A slow object (a Prometheus that hangs, a slow
API call) holds one worker, never the others or the queue.

After each pass the key is scheduled again: at the rollout's own wake-up (the next check
or step end) if it has one, else after the resync period lengthened by a random share of
up to 20%, so that a thousand objects created together do not resync together and no
object resyncs more than once per period (controller-runtime jitters its resync the same
way). A pass that raises is retried with an exponential backoff.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from llmcanary.workqueue.queue import Key, QueueStats, WorkQueue

log = logging.getLogger(__name__)

#: Reconcile one object; returns seconds until it needs a pass again (inf: only on a
#: change or the resync), or None when it is gone and needs no more passes.
Work = Callable[[Key], float | None]

#: Resyncs are spread over this share of the period, after it.
RESYNC_JITTER = 0.2
#: The first retry of a failed pass; it doubles up to the resync period.
ERROR_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class PoolHealth:
    """Whether the pool makes progress: every worker stuck while work waits means no."""

    ok: bool
    reason: str
    stats: QueueStats


class WorkerPool:
    def __init__(
        self,
        queue: WorkQueue,
        work: Work,
        *,
        workers: int,
        resync_seconds: float,
        stuck_seconds: float,
        random_share: Callable[[], float] = random.random,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.queue = queue
        self.work = work
        self.workers = workers
        self.resync_seconds = resync_seconds
        self.stuck_seconds = stuck_seconds
        self._context: contextvars.Context | None = None
        self._random_share = random_share
        self._failures: dict[Key, int] = {}
        self._threads: list[threading.Thread] = []

    def run_passes_in(self, context: contextvars.Context) -> None:
        """Run every pass in a copy of ``context``: what the reconcile function finds
        through context variables (kopf's event poster lives in those of its resource
        handlers) is then there on the worker threads too."""
        self._context = context

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(
                target=self._run,
                name=f"llmcanary-worker-{index}",
                # A pass stuck in a read must not keep the process alive after SIGTERM.
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        log.info(
            "started %d workers (resync every %.0f s)",
            self.workers,
            self.resync_seconds,
            extra={"workers": self.workers, "resync_seconds": self.resync_seconds},
        )

    def stop(self, timeout: float) -> bool:
        """Close the queue and wait up to ``timeout`` s for passes in progress to end.

        True if every worker ended; a worker still in a pass is left behind (a daemon
        thread: it does not hold the process).
        """
        self.queue.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning(
                "%d workers still in a pass at exit: %s",
                len(alive),
                ", ".join(alive),
                extra={"workers": alive},
            )
        return not alive

    def _run(self) -> None:
        while (key := self.queue.get()) is not None:
            try:
                context = self._context
                delay = self._pass(key) if context is None else context.copy().run(self._pass, key)
                if delay is not None:
                    self.queue.add(key, delay)
            finally:
                self.queue.done(key)

    def _pass(self, key: Key) -> float | None:
        try:
            wakeup = self.work(key)
        except Exception:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(self.resync_seconds, ERROR_BACKOFF_SECONDS * 2.0 ** (failures - 1))
            log.exception(
                "reconciling %s/%s failed (%d in a row); retrying in %.0f s",
                *key,
                failures,
                delay,
                extra={"llmd": "/".join(key), "failures": failures, "retry_seconds": delay},
            )
            return delay
        self._failures.pop(key, None)
        if wakeup is None:
            return None
        resync = self.resync_seconds * (1 + RESYNC_JITTER * self._random_share())
        return resync if math.isinf(wakeup) else min(wakeup, resync)

    def stats(self) -> QueueStats:
        return self.queue.stats()

    def health(self) -> PoolHealth:
        stats = self.queue.stats()
        # Stuck: work waits, and even the most recent pass in progress is older than the
        # bound, so every worker is held by one.
        stuck = (
            stats.depth > 0
            and stats.busy >= self.workers
            and stats.shortest_busy_seconds > self.stuck_seconds
        )
        if stuck:
            reason = (
                f"all {self.workers} workers have been in one pass for more than"
                f" {self.stuck_seconds:.0f} s while {stats.depth} LLMDeployments wait (the"
                f" oldest for {stats.oldest_wait_seconds:.0f} s)"
            )
            return PoolHealth(False, reason, stats)
        return PoolHealth(True, "", stats)
