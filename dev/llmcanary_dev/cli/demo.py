"""``llmcanary demo``: the main job, on the local stack (see llmcanary_dev.demo.story)."""

from __future__ import annotations

import signal
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from llmcanary_dev.cli.bench import summary_table
from llmcanary_dev.demo.chart import write_chart
from llmcanary_dev.demo.story import NAMESPACE, DemoError, Story
from llmcanary_dev.demo.timeline import outcomes
from llmcanary_dev.localstack.stack import StackError, StackSettings

ARMS = ("stable", "baseline", "canary")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@click.command()
@click.option(
    "--rollout-timeout", default=420, show_default=True, help="Seconds allowed per rollout."
)
@click.option("--concurrency", default=4, show_default=True, help="Streams of steady load.")
def demo(rollout_timeout: int, concurrency: int) -> None:
    """Local stack + operator + tiny-llm: a healthy revision promoted, a slow one rolled back."""
    # SIGTERM ends the story like Ctrl-C: the operator and the load stop with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    console = Console(width=max(Console().width, 110))
    settings = StackSettings.from_env()
    t0 = time.monotonic()
    story = Story(
        settings, console.print, rollout_timeout_s=rollout_timeout, concurrency=concurrency
    )
    try:
        load = story.run()
    except (DemoError, StackError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if story.samples:
            chart = write_chart(
                story.samples,
                settings.state_dir / "demo" / "rollouts.png",
                "llmcanary demo: canary weight and end-to-end P95 per arm, as the operator saw it",
            )
            console.print(f"==> chart: {chart}")

    table = Table(title="Rollouts (the e2e P95 of each rollout's last check)")
    for column in (
        "revision",
        "outcome",
        "seconds",
        "max weight",
        "checks",
        "canary e2e p95 ms",
        "baseline e2e p95 ms",
        "requests stable / baseline / canary",
    ):
        table.add_column(column, justify="right" if column != "revision" else "left")
    for row in outcomes(story.samples):
        shares = story.shares.get(row.label, {})
        split = " / ".join(str(shares.get(f"tiny-llm-{arm}", 0)) for arm in ARMS) if shares else "-"
        table.add_row(
            row.label,
            row.result,
            f"{row.seconds:.0f}",
            f"{row.max_weight}%",
            str(row.checks),
            _ms(row.canary_ms),
            _ms(row.reference_ms),
            split,
        )
    console.print(table)
    console.print(summary_table(load, "The steady load through the gateway, whole demo"))
    console.print(
        f"{load.requests} requests ({load.succeeded} ok, errors {load.errors or 'none'}),"
        f" {load.output_tokens_per_s:.0f} output tokens/s"
    )
    console.print(
        f"==> done in {time.monotonic() - t0:.0f}s. The stack is still up:\n"
        f"    kubectl --kubeconfig .devcluster/kubeconfig -n {NAMESPACE} get llmd,pods\n"
        "    llmcanary bench            # load through the gateway\n"
        "    llmcanary stack down       # stop everything"
    )
