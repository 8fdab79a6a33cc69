"""The kopf handlers only schedule work: no thread per object, a clean stop.

kopf runs a synchronous handler or daemon on a thread of its pool for as long as it
runs; one daemon per LLMDeployment once held a thread each, and the operator stalled
past min(32, CPUs + 4) objects. Every per-object handler is now a coroutine that puts a
key in the work queue, and the daemon only marks the object as this operator's.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any, cast

import kopf
from kopf._core.intents.stoppers import DaemonStopper

from llmcanary import main
from llmcanary.reconciler import Reconciler
from llmcanary.runtime import Runtime
from llmcanary.workqueue import Key, WorkerPool, WorkQueue

KEY: Key = ("ml", "tiny")


class Forgetful:
    def __init__(self) -> None:
        self.forgotten: list[tuple[str, str]] = []

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))


def memo(pool: WorkerPool | None = None) -> kopf.Memo:
    if pool is None:  # never started: the test looks at the queue itself
        pool = WorkerPool(
            WorkQueue(), lambda _key: None, workers=1, resync_seconds=60, stuck_seconds=60
        )
    return kopf.Memo(runtime=Runtime(cast(Reconciler, Forgetful()), pool))


def test_per_object_handlers_are_coroutines() -> None:
    for handler in (main.responsible_for, main.llmdeployment_event, main.child_event):
        assert inspect.iscoroutinefunction(handler), f"{handler.__name__} would hold a thread"


def test_the_daemon_marks_the_object_as_ours_while_it_runs() -> None:
    m = memo()
    stopper = DaemonStopper()

    async def run() -> None:
        from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter

        task = asyncio.create_task(
            main.responsible_for(
                stopped=AsyncFlagWaiter(stopper), namespace="ml", name="tiny", memo=m
            )
        )
        await asyncio.sleep(0.05)
        assert m.runtime.queue.tracked(KEY) and m.runtime.queue.stats().depth == 1
        stopper.set(reason=kopf.DaemonStoppingReason.OPERATOR_PAUSING)  # a peer took over
        await asyncio.wait_for(task, 2)

    asyncio.run(run())
    assert m.runtime.pool._context is not None, (
        "the workers' passes run in a resource handler's context"
    )
    assert not m.runtime.queue.tracked(KEY)
    assert not m.runtime.queue.add(KEY), "a standby or a deleted object schedules nothing"
    assert cast(Forgetful, m.runtime.reconciler).forgotten == [KEY]


def test_status_echoes_schedule_nothing_spec_changes_do() -> None:
    m = memo()
    m.runtime.queue.track(KEY)
    assert m.runtime.queue.get(timeout=0) == KEY
    m.runtime.queue.done(KEY)

    def event(generation: int, phase: str) -> None:
        body: Any = {"metadata": {"generation": generation}, "status": {"phase": phase}}
        asyncio.run(
            main.llmdeployment_event(
                type="MODIFIED", body=body, namespace="ml", name="tiny", memo=m
            )
        )

    event(1, "Initializing")
    assert m.runtime.queue.get(timeout=0) == KEY
    m.runtime.queue.done(KEY)
    event(1, "Stable")  # the operator's own status write coming back
    assert m.runtime.queue.get(timeout=0) is None
    event(2, "Stable")
    assert m.runtime.queue.get(timeout=0) == KEY


def hanging_pool(release: threading.Event, workers: int, stuck_seconds: float) -> WorkerPool:
    """A started pool whose every pass hangs until ``release`` is set."""
    pool = WorkerPool(
        WorkQueue(),
        lambda _key: release.wait(30) and None,
        workers=workers,
        resync_seconds=60,
        stuck_seconds=stuck_seconds,
    )
    pool.start()
    return pool


def test_cleanup_stops_the_workers_even_when_one_is_stuck() -> None:
    release = threading.Event()
    pool = hanging_pool(release, workers=2, stuck_seconds=60)
    pool.queue.track(KEY)
    time.sleep(0.1)
    started = time.monotonic()
    main.cleanup(memo=memo(pool))
    assert time.monotonic() - started < main.STOP_SECONDS + 1
    assert pool.queue.get(timeout=0) is None, "closed: nothing more is handed out"
    release.set()


def test_the_liveness_probe_fails_when_every_worker_is_stuck() -> None:
    release = threading.Event()
    pool = hanging_pool(release, workers=1, stuck_seconds=0.1)
    try:
        pool.queue.track(("ml", "hung"))
        pool.queue.track(("ml", "waiting"))
        time.sleep(0.3)
        try:
            asyncio.run(main.workers_alive(memo=memo(pool)))
        except kopf.PermanentError as exc:
            assert "all 1 workers" in str(exc)
        else:
            raise AssertionError("the probe passed with every worker stuck")
        release.set()
        time.sleep(0.2)
        report = asyncio.run(main.workers_alive(memo=memo(pool)))
        assert report["busy"] == 0
    finally:
        release.set()
        pool.stop(timeout=1)
