"""``llmcanary crd``: print the CRD generated from the API models, or its reference."""

from __future__ import annotations

import click

from llmcanary.api.crd import render_crd_yaml
from llmcanary.api.reference import render_reference


@click.command()
@click.option(
    "--reference",
    is_flag=True,
    help="Print the Markdown field reference (docs/reference/llmdeployment.md) instead.",
)
def crd(reference: bool) -> None:
    """Print the LLMDeployment CustomResourceDefinition (YAML)."""
    click.echo(render_reference() if reference else render_crd_yaml(), nl=False)
