"""The ``llmcanary`` command (also installed as the kubectl plugin ``kubectl-llmcanary``)."""

from __future__ import annotations

import click

from llmcanary.cli.bench import bench
from llmcanary.cli.control import COMMANDS, PluginAwareGroup
from llmcanary.cli.crd import crd
from llmcanary.cli.demo import demo
from llmcanary.cli.devcluster import devcluster
from llmcanary.cli.preflight import preflight
from llmcanary.cli.run import run
from llmcanary.cli.stack import stack


@click.group(cls=PluginAwareGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmcanary")
def main() -> None:
    """Canary rollouts of LLMs served by NVIDIA Triton."""


main.add_command(run)
main.add_command(crd)
main.add_command(devcluster)
main.add_command(demo)
main.add_command(preflight)
main.add_command(stack)
main.add_command(bench)
for command in COMMANDS:
    main.add_command(command)
