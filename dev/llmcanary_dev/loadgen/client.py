"""A streaming load generator for Triton's ``generate_stream`` endpoint.

Each request POSTs ``{"PROMPT": ..., "MAX_TOKENS": ...}`` to
``<url>/v2/models/<model>/generate_stream`` and reads the server-sent events as they
arrive: the first event's arrival is the time to first token, each event one output
token. Any non-200 answer is an error with its status, so a 503 from a full queue or
from the proxy (which Triton's own failure counter never sees) is counted here.

Load is either closed (``concurrency`` workers, each sending its next request when the
last one ends) or open (``rate`` requests per second, Poisson arrivals, whatever the
answers). Requests that *start* during the warm-up are not reported. All times come
from ``time.monotonic``.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from llmcanary_dev.loadgen.stats import RequestResult

__all__ = ["LoadConfig", "make_prompt", "run_load"]

WORDS = [
    "canary",
    "stable",
    "weight",
    "triton",
    "batch",
    "token",
    "latency",
    "model",
    "revision",
    "rollout",
    "promote",
    "prometheus",
    "gateway",
    "route",
    "analysis",
    "preflight",
    "memory",
    "kernel",
    "tensor",
    "stream",
]


def make_prompt(length: int, rng: random.Random) -> str:
    """A prompt of exactly ``length`` characters of plain words."""
    text = ""
    while len(text) < length:
        text += rng.choice(WORDS) + " "
    return text[:length]


@dataclass(frozen=True)
class LoadConfig:
    url: str  # the Triton (or gateway) base URL, e.g. http://127.0.0.1:18080
    model: str = "tiny-llm"
    host: str | None = None  # the Host header, for a gateway route with hostnames
    concurrency: int = 8
    rate: float | None = None  # requests/s (open loop); None: closed loop at `concurrency`
    prompt_length: int = 64
    max_tokens: int = 32
    warmup_s: float = 2.0
    duration_s: float | None = 20.0
    requests: int | None = None  # stop after this many measured requests instead
    timeout_s: float = 60.0
    seed: int = 0
    max_in_flight: int = 1024  # open loop: never more outstanding requests than this
    # Closed loop: a stream whose request failed waits this long before its next, as a
    # client backs off. Without it a failure that returns in 2 ms is retried at once, and
    # a gateway's half-second gap (a pod stopped before the route that still lists it is
    # re-read) counts as a thousand failures: the count measured the retry speed.
    error_backoff_s: float = 0.1

    @property
    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}/v2/models/{self.model}/generate_stream"


async def _one(session: aiohttp.ClientSession, config: LoadConfig, prompt: str) -> RequestResult:
    started = time.monotonic()
    first: float | None = None
    tokens = 0
    body = {"PROMPT": prompt, "MAX_TOKENS": config.max_tokens}
    try:
        headers = {"Host": config.host} if config.host else None
        async with session.post(config.endpoint, json=body, headers=headers) as answer:
            if answer.status != 200:
                detail = (await answer.text())[:200]
                return RequestResult(
                    started, time.monotonic(), None, 0, answer.status, detail or "http error"
                )
            async for raw in answer.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[5:])
                if "error" in event:
                    return RequestResult(
                        started, time.monotonic(), first, tokens, 200, str(event["error"])
                    )
                if first is None:
                    first = time.monotonic()
                tokens += 1
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return RequestResult(
            started, time.monotonic(), first, tokens, None, type(exc).__name__ + f": {exc}"
        )
    return RequestResult(started, time.monotonic(), first, tokens, 200)


async def _run(
    config: LoadConfig,
    on_result: Callable[[RequestResult], None] | None,
    stop: threading.Event,
) -> tuple[list[RequestResult], float, float]:
    rng = random.Random(config.seed)
    results: list[RequestResult] = []
    t0 = time.monotonic()
    measure_from = t0 + config.warmup_s
    end = None if config.duration_s is None else measure_from + config.duration_s

    def more() -> bool:
        if stop.is_set():
            return False
        if end is not None and time.monotonic() >= end:
            return False
        return config.requests is None or len(results) < config.requests

    def record(result: RequestResult) -> None:
        if result.started >= measure_from:
            results.append(result)
        if on_result is not None:
            on_result(result)

    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    # A connection per request: a gateway may close idle keep-alive connections when its
    # configuration changes (at every weight change), and a request racing that close
    # would count as an error of the model under test.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if config.rate is None:

            async def worker() -> None:
                while more():
                    result = await _one(session, config, make_prompt(config.prompt_length, rng))
                    record(result)
                    if not result.ok:
                        await asyncio.sleep(config.error_backoff_s)

            await asyncio.gather(*(worker() for _ in range(config.concurrency)))
        else:
            in_flight: set[asyncio.Task[None]] = set()
            gate = asyncio.Semaphore(config.max_in_flight)

            async def send() -> None:
                async with gate:
                    record(await _one(session, config, make_prompt(config.prompt_length, rng)))

            next_at = time.monotonic()
            while more():
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                task = asyncio.create_task(send())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                next_at += rng.expovariate(config.rate)
            await asyncio.gather(*in_flight)
    return results, measure_from, time.monotonic()


def run_load(
    config: LoadConfig,
    on_result: Callable[[RequestResult], None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[list[RequestResult], float]:
    """Run the load; returns the measured results and the measured wall time (seconds).

    ``on_result`` sees every result (warm-up too) as it completes; ``stop`` ends the
    run early (in-flight requests finish).
    """
    results, measure_from, finished = asyncio.run(
        _run(config, on_result, stop or threading.Event())
    )
    return results, max(0.0, finished - measure_from)
