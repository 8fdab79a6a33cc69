"""``python -m llmcanary``: the same command as the ``llmcanary`` script."""

from llmcanary.cli import main

main()
