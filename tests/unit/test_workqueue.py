"""The work queue and the worker pool: dedup, delays, one worker per key, health, stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from llmcanary.workqueue import Key, WorkerPool, WorkQueue
from llmcanary.workqueue.triggers import ChangeFilter

A: Key = ("ml", "a")
B: Key = ("ml", "b")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(clock: Clock) -> WorkQueue:
    return WorkQueue(clock)


def test_only_tracked_keys_are_scheduled(queue: WorkQueue) -> None:
    assert not queue.add(A), "an untracked key (deleted, or a standby's) schedules nothing"
    assert queue.get(timeout=0) is None
    queue.track(A)
    assert queue.get(timeout=0) == A, "tracking schedules the first pass at once"


def test_a_burst_of_adds_is_one_pass(queue: WorkQueue) -> None:
    queue.track(A)
    for _ in range(50):
        queue.add(A)
    assert queue.get(timeout=0) == A
    queue.done(A)
    assert queue.get(timeout=0) is None


def test_the_earlier_time_wins(queue: WorkQueue, clock: Clock) -> None:
    queue.track(A)
    assert queue.get(timeout=0) == A
    queue.done(A)
    queue.add(A, delay=60)
    queue.add(A, delay=600)  # a resync after a wake-up: the wake-up stays
    assert queue.stats().scheduled == 1
    clock.now += 59
    assert queue.get(timeout=0) is None
    clock.now += 1
    assert queue.get(timeout=0) == A
    queue.add(B)  # untracked
    queue.done(A)
    queue.add(A, delay=600)
    queue.add(A, delay=5)  # an event sooner than the resync brings it forward
    clock.now += 5
    assert queue.get(timeout=0) == A


def test_a_key_is_never_handed_to_two_workers(queue: WorkQueue) -> None:
    queue.track(A)
    queue.track(B)
    first = queue.get(timeout=0)
    assert first == A
    queue.add(A)  # a watch event during A's pass
    assert queue.get(timeout=0) == B, "A waits for its own pass to end"
    assert queue.get(timeout=0) is None
    assert queue.stats().depth == 0, "a key parked behind its own pass is not waiting for a worker"
    queue.done(A)
    assert queue.get(timeout=0) == A, "the change seen during the pass is not lost"


def test_untracked_keys_drop_out(queue: WorkQueue) -> None:
    queue.track(A)
    queue.untrack(A)
    assert queue.get(timeout=0) is None
    queue.track(A)
    assert queue.get(timeout=0) == A
    queue.untrack(A)  # deleted during its pass
    assert not queue.add(A, delay=1), "no resync for it after the pass"
    queue.done(A)
    assert queue.stats().tracked == 0


def test_stats_show_depth_and_the_oldest_wait(queue: WorkQueue, clock: Clock) -> None:
    queue.track(A)
    clock.now += 3
    queue.track(B)
    clock.now += 2
    stats = queue.stats()
    assert (stats.tracked, stats.depth, stats.busy) == (2, 2, 0)
    assert stats.oldest_wait_seconds == pytest.approx(5)
    assert queue.get(timeout=0) == A
    clock.now += 7
    stats = queue.stats()
    assert (stats.depth, stats.busy) == (1, 1)
    assert stats.oldest_wait_seconds == pytest.approx(9), "B, due since it was tracked"
    assert stats.longest_busy_seconds == pytest.approx(7)


def test_close_wakes_a_waiting_consumer() -> None:
    queue = WorkQueue()
    got: list[Key | None] = []
    thread = threading.Thread(target=lambda: got.append(queue.get()))
    thread.start()
    time.sleep(0.05)
    queue.close()
    thread.join(timeout=2)
    assert got == [None]


def test_get_wakes_when_a_delayed_key_comes_due() -> None:
    queue = WorkQueue()
    queue.track(A)
    assert queue.get(timeout=0) == A
    queue.done(A)
    queue.add(A, delay=0.1)
    started = time.monotonic()
    assert queue.get(timeout=5) == A
    assert time.monotonic() - started >= 0.09


# --- the pool -------------------------------------------------------------------------


class Recorder:
    """A reconcile function that records who ran what, and can hold or fail a key."""

    def __init__(self, wakeup: float | None = float("inf")) -> None:
        self.wakeup = wakeup
        self.passes: list[Key] = []
        self.running: set[Key] = set()
        self.overlaps = 0
        self.hold = threading.Event()
        self.held: set[Key] = set()
        self.fail: set[Key] = set()
        self.lock = threading.Lock()

    def __call__(self, key: Key) -> float | None:
        with self.lock:
            if key in self.running:
                self.overlaps += 1
            self.running.add(key)
            self.passes.append(key)
        try:
            if key in self.held:
                self.hold.wait(10)
            if key in self.fail:
                raise RuntimeError("boom")
            time.sleep(0.002)
            return self.wakeup
        finally:
            with self.lock:
                self.running.discard(key)


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def pool(recorder: Recorder) -> Iterator[WorkerPool]:
    pool = WorkerPool(WorkQueue(), recorder, workers=3, resync_seconds=3600, stuck_seconds=0.2)
    pool.start()
    yield pool
    recorder.hold.set()
    pool.stop(timeout=2)


def test_more_objects_than_workers_are_all_reconciled(pool: WorkerPool, recorder: Recorder) -> None:
    keys = [("ml", f"m{i}") for i in range(40)]
    for key in keys:
        pool.queue.track(key)
    wait_until(lambda: set(recorder.passes) == set(keys))
    for _ in range(20):  # events while passes run
        for key in keys[:5]:
            pool.queue.add(key)
    wait_until(lambda: pool.stats().depth == 0 and pool.stats().busy == 0)
    assert recorder.overlaps == 0, "one object was reconciled by two workers at once"
    assert len([t for t in threading.enumerate() if t.name.startswith("llmcanary-worker")]) == 3


def test_a_stuck_object_holds_one_worker_not_the_others(
    pool: WorkerPool, recorder: Recorder
) -> None:
    slow: Key = ("ml", "hung-prometheus")
    recorder.held.add(slow)
    pool.queue.track(slow)
    wait_until(lambda: slow in recorder.running)
    others = [("ml", f"m{i}") for i in range(10)]
    for key in others:
        pool.queue.track(key)
    wait_until(lambda: set(others) <= set(recorder.passes))
    assert pool.health().ok, "one worker busy is not a stuck pool"


def test_health_fails_when_every_worker_is_stuck_while_work_waits(
    pool: WorkerPool, recorder: Recorder
) -> None:
    stuck = [("ml", f"hung{i}") for i in range(3)]
    recorder.held.update(stuck)
    for key in stuck:
        pool.queue.track(key)
    wait_until(lambda: len(recorder.running) == 3)
    time.sleep(0.3)
    assert pool.health().ok, "nothing waits: busy is not stuck"
    pool.queue.track(("ml", "waiting"))
    health = pool.health()
    assert not health.ok
    assert "all 3 workers" in health.reason and "1 LLMDeployments wait" in health.reason
    recorder.hold.set()
    wait_until(lambda: pool.health().ok)


def test_a_failing_pass_is_retried_with_backoff(recorder: Recorder) -> None:
    bad: Key = ("ml", "bad")
    recorder.fail.add(bad)
    pool = WorkerPool(WorkQueue(), recorder, workers=1, resync_seconds=3600, stuck_seconds=60)
    pool.start()
    try:
        pool.queue.track(bad)
        # The first retry after 1 s; the second is scheduled 2 s later, not in a loop.
        wait_until(lambda: recorder.passes.count(bad) >= 2 and pool.stats().busy == 0)
        assert pool.stats().scheduled == 1
        assert recorder.passes.count(bad) == 2
    finally:
        pool.stop(timeout=2)


def test_the_next_pass_is_the_wakeup_or_a_spread_resync() -> None:
    clock = Clock()
    for wakeup, share, expected in [
        (float("inf"), 0.0, 600.0),  # idle: the resync period
        (float("inf"), 1.0, 720.0),  # spread over 20% more, never sooner
        (30.0, 0.5, 30.0),  # a check due sooner
        (900.0, 0.0, 600.0),  # never later than the resync
    ]:
        queue = WorkQueue(clock)
        pool = WorkerPool(
            queue,
            lambda _key, w=wakeup: w,
            workers=1,
            resync_seconds=600,
            stuck_seconds=60,
            random_share=lambda s=share: s,
        )
        queue.track(A)
        key = queue.get(timeout=0)
        assert key == A
        queue.add(A, pool._pass(A) or 0)  # what a worker does after a pass
        queue.done(A)
        clock.now += expected - 0.001
        assert queue.get(timeout=0) is None
        clock.now += 0.001
        assert queue.get(timeout=0) == A


def test_a_gone_object_is_not_scheduled_again() -> None:
    queue = WorkQueue()
    pool = WorkerPool(queue, lambda _key: None, workers=1, resync_seconds=1, stuck_seconds=60)
    assert pool._pass(A) is None


def test_stop_returns_even_if_a_pass_never_ends(recorder: Recorder) -> None:
    pool = WorkerPool(WorkQueue(), recorder, workers=2, resync_seconds=3600, stuck_seconds=60)
    pool.start()
    recorder.held.add(A)
    pool.queue.track(A)
    wait_until(lambda: A in recorder.running)
    started = time.monotonic()
    assert not pool.stop(timeout=0.3), "the stuck worker is reported"
    assert time.monotonic() - started < 1
    assert all(t.daemon for t in pool._threads), "a stuck worker cannot hold the process"
    recorder.hold.set()


# --- which LLMDeployment events ask for a pass ------------------------------------------


def body(generation: int, status: str = "", **annotations: str) -> dict[str, object]:
    return {
        "metadata": {"generation": generation, "annotations": annotations},
        "status": {"phase": status},
    }


def test_the_echo_of_a_status_write_asks_for_no_pass() -> None:
    changes = ChangeFilter()
    assert changes.changed(A, body(1))
    assert not changes.changed(A, body(1, status="Stable")), "only status moved"
    assert changes.changed(A, body(2, status="Stable")), "the spec changed"
    assert changes.changed(A, body(2, status="Stable", **{"llmcanary.io/promote": "1"}))
    deleting = body(2, status="Stable", **{"llmcanary.io/promote": "1"})
    deleting["metadata"]["deletionTimestamp"] = "2026-11-29T00:00:00Z"  # type: ignore[index]
    assert changes.changed(A, deleting)
    changes.forget(A)
    assert changes.changed(A, body(2)), "forgotten: the next event counts"
