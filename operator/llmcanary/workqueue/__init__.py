"""Who works on which LLMDeployment, and when.

Watch events, wake-ups and resyncs put an object's key in a :class:`WorkQueue`; a
:class:`WorkerPool` of a fixed number of threads takes keys from it and reconciles them.
The cost of the operator follows what changes, not how many objects exist: an idle
object waits in the queue's schedule until its next resync, and no thread is held for it.
"""

from llmcanary.workqueue.pool import PoolHealth, WorkerPool
from llmcanary.workqueue.queue import Key, QueueStats, WorkQueue

__all__ = ["Key", "PoolHealth", "QueueStats", "WorkQueue", "WorkerPool"]
