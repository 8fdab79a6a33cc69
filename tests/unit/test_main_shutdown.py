"""The rollout loop ends when the operator exits, even if kopf never stops its daemon.

kopf stops daemons on exit, but not one spawned by an event still being handled when
SIGTERM came; its thread then kept the process alive until SIGKILL. The cleanup activity
sets OPERATOR_EXITING, and the loop must notice it whatever it was waiting for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import SyncFlagWaiter
from kopf._core.intents.stoppers import DaemonStopper

from llmcanary import main


class Looping:
    """A reconciler whose rollout never needs waking: the loop would wait a resync period."""

    def __init__(self) -> None:
        self.passes = 0

    def reconcile(self, namespace: str, name: str) -> None:
        self.passes += 1


@pytest.fixture(autouse=True)
def fresh_exit_flag() -> Iterator[None]:
    main.OPERATOR_EXITING.clear()
    yield
    main.OPERATOR_EXITING.clear()


def start_loop(reconciler: Any, stopper: DaemonStopper) -> threading.Thread:
    """rollout_loop in a thread, as kopf runs a sync daemon."""
    thread = threading.Thread(
        target=main.rollout_loop,
        kwargs={
            "stopped": SyncFlagWaiter(stopper),
            "namespace": "ml",
            "name": "tiny",
            "memo": kopf.Memo(reconciler=reconciler),
        },
        daemon=True,
    )
    thread.start()
    return thread


async def stop(stopper: DaemonStopper) -> None:
    stopper.set(reason=kopf.DaemonStoppingReason.OPERATOR_EXITING)  # as kopf does, in its loop


def test_a_daemon_kopf_never_stops_ends_when_the_operator_cleans_up() -> None:
    reconciler = Looping()
    thread = start_loop(reconciler, DaemonStopper())  # never set: the daemon kopf forgot
    threading.Event().wait(0.3)
    assert thread.is_alive(), "the loop waits for its next pass (a resync period)"
    assert reconciler.passes == 1

    main.cleanup()
    thread.join(timeout=main.EXIT_POLL_SECONDS + 2)
    assert not thread.is_alive(), "the loop outlived the operator's cleanup"
    assert reconciler.passes == 1, "no pass after the operator began exiting"


def test_the_daemons_own_stop_still_ends_it() -> None:
    stopper = DaemonStopper()
    thread = start_loop(Looping(), stopper)
    threading.Event().wait(0.2)
    asyncio.run(stop(stopper))
    thread.join(timeout=main.EXIT_POLL_SECONDS + 2)
    assert not thread.is_alive()
    assert not main.OPERATOR_EXITING.is_set()
