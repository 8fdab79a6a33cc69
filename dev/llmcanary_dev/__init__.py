"""llmcanary's development stack (the ``llmcanary-dev`` distribution, source root ``dev/``).

The local control plane (:mod:`llmcanary_dev.devcluster`), the local data plane
(:mod:`llmcanary_dev.localstack`), the demo (:mod:`llmcanary_dev.demo`) and the load
generator (:mod:`llmcanary_dev.loadgen`), with their commands (:mod:`llmcanary_dev.cli`):
``llmcanary devcluster|stack|demo|bench``, added to the ``llmcanary`` command through the
``llmcanary.commands`` entry-point group. It imports from ``llmcanary``; ``llmcanary`` never
imports it, and the operator image does not install it.
"""
