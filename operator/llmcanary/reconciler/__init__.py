"""The reconciler: one pass for one LLMDeployment, whatever triggered it.

:mod:`~llmcanary.reconciler.loop` observes and decides (the decision is the pure
:func:`llmcanary.rollout.machine.decide`), :mod:`~llmcanary.reconciler.apply` carries
out the plan in a safe order, and :mod:`~llmcanary.reconciler.observe` reads the
workloads.
"""

from llmcanary.reconciler.loop import Reconciler, Result

__all__ = ["Reconciler", "Result"]
