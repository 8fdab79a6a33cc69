"""``llmcanary bench``: TTFT, TPOT and latency of a Triton endpoint under load."""

from __future__ import annotations

import json
import math
import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmcanary_dev.loadgen.client import LoadConfig, run_load
from llmcanary_dev.loadgen.stats import RequestResult, Summary, summarize
from llmcanary_dev.localstack.stack import StackSettings, running


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def summary_table(summary: Summary, title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for name in ("p50", "p90", "p95", "p99", "mean"):
        table.add_column(name, justify="right")
    for label, dist in (
        ("time to first token (ms)", summary.ttft_ms),
        ("time per output token (ms)", summary.tpot_ms),
        ("end-to-end latency (ms)", summary.latency_ms),
    ):
        table.add_row(
            label, *(_fmt(getattr(dist, n)) for n in ("p50", "p90", "p95", "p99", "mean"))
        )
    return table


def _default_url() -> str | None:
    info = running(StackSettings.from_env())
    return None if info is None else str(info["gateway"])


@click.command()
@click.option(
    "--url", default=None, help="Triton or gateway base URL (default: the local stack's gateway)."
)
@click.option("--host", default=None, help="Host header (a gateway route's hostname).")
@click.option("--model", default="tiny-llm", show_default=True)
@click.option(
    "-c", "--concurrency", default=8, show_default=True, help="Closed loop: requests in flight."
)
@click.option(
    "-r", "--rate", type=float, default=None, help="Open loop: requests/s (Poisson) instead."
)
@click.option("--prompt-length", default=64, show_default=True, help="Characters per prompt.")
@click.option("--max-tokens", default=32, show_default=True, help="Output tokens per request.")
@click.option("--warmup", default=2.0, show_default=True, help="Seconds not measured first.")
@click.option(
    "-d", "--duration", type=float, default=20.0, show_default=True, help="Seconds measured."
)
@click.option(
    "-n", "--requests", type=int, default=None, help="Measured requests (instead of --duration)."
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option("--seed", default=0, show_default=True)
def bench(
    url: str | None,
    host: str | None,
    model: str,
    concurrency: int,
    rate: float | None,
    prompt_length: int,
    max_tokens: int,
    warmup: float,
    duration: float,
    requests: int | None,
    output: str,
    seed: int,
) -> None:
    """Stream requests at a Triton endpoint and report TTFT, TPOT, latency and errors."""
    url = url or _default_url()
    if url is None:
        raise click.UsageError("no --url, and the local stack is not running (llmcanary stack up)")
    config = LoadConfig(
        url=url,
        model=model,
        host=host,
        concurrency=concurrency,
        rate=rate,
        prompt_length=prompt_length,
        max_tokens=max_tokens,
        warmup_s=warmup,
        duration_s=None if requests is not None else duration,
        requests=requests,
        seed=seed,
    )
    console = Console(stderr=True)
    total = float(requests) if requests is not None else warmup + duration
    t0 = time.monotonic()
    with Progress(
        TextColumn("[bold]bench"),
        BarColumn(),
        TextColumn("{task.fields[done]} done, {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("load", total=total, done=0, failed=0)
        counts = {"done": 0, "failed": 0}

        def seen(result: RequestResult) -> None:
            counts["done" if result.ok else "failed"] += 1
            position = counts["done"] if requests is not None else time.monotonic() - t0
            progress.update(
                task, completed=min(position, total), done=counts["done"], failed=counts["failed"]
            )

        results, measured = run_load(config, on_result=seen)
    summary = summarize(results, measured)
    if output == "json":
        payload = {"config": {**config.__dict__}, "summary": summary.as_dict()}
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    out = Console()
    mode = f"rate {rate}/s" if rate is not None else f"concurrency {concurrency}"
    out.print(summary_table(summary, f"{config.endpoint} ({mode})"))
    out.print(
        f"requests {summary.requests} ({summary.succeeded} ok) in {summary.duration_s:.1f}s:"
        f" {summary.requests_per_s:.1f} req/s, {summary.output_tokens_per_s:.0f} output tokens/s"
    )
    if summary.errors:
        out.print("errors: " + ", ".join(f"{k} x{v}" for k, v in summary.errors.items()))
