"""The development commands, each a click command registered in dev/pyproject.toml under
the ``llmcanary.commands`` entry-point group: ``llmcanary devcluster|stack|demo|bench``."""
