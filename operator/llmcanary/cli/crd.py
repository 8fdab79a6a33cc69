"""``llmcanary crd``: print the CRD generated from the API models."""

from __future__ import annotations

import click

from llmcanary.api.crd import render_crd_yaml


@click.command()
def crd() -> None:
    """Print the LLMDeployment CustomResourceDefinition (YAML)."""
    click.echo(render_crd_yaml(), nl=False)
