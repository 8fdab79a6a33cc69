"""Steady streaming load through the local stack's gateway, in a thread, for a test."""

from __future__ import annotations

import threading
from dataclasses import replace

from llmcanary_dev.loadgen.client import LoadConfig, run_load
from llmcanary_dev.loadgen.stats import RequestResult


class LoadDriver:
    """Closed-loop streaming load through the gateway in a thread, until stopped."""

    def __init__(
        self, url: str, concurrency: int = 4, model: str = "tiny-llm", host: str | None = None
    ) -> None:
        self.config = LoadConfig(
            url=url, model=model, host=host, concurrency=concurrency, warmup_s=0, duration_s=None
        )
        self.results: list[RequestResult] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        results, _ = run_load(self.config, stop=self._stop)
        self.results.extend(results)

    def start(self, concurrency: int | None = None) -> LoadDriver:
        """Start the load, with ``concurrency`` streams instead of the default if given."""
        if concurrency is not None:
            self.config = replace(self.config, concurrency=concurrency)
        self._thread.start()
        return self

    def stop(self) -> list[RequestResult]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=90)
        return self.results
