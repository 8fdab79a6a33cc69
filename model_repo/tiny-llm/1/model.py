"""tiny-llm: a small decoder-only transformer, served by Triton's Python backend.

The model the demo, the end-to-end tests and the benchmarks run on real Triton. It is a
real language model in shape (byte tokens, learned positions, pre-norm attention blocks
with a KV cache, greedy or temperature sampling), but its weights come from a fixed seed:
nothing is downloaded, and a given configuration always produces the same text.

What makes it useful for canaries:

- **Streaming**: under ``model_transaction_policy { decoupled: true }`` every generated
  token is sent as its own response the moment it exists (Triton's ``generate_stream``
  turns them into server-sent events); without it, one response carries the whole text.
- **Dynamic batching that batches**: ``execute`` gets every request Triton's batcher
  collected and decodes them together, one forward pass per token for the whole batch,
  so under concurrent load the execution count is far below the request count.
- **Size from the spec**: the ``layers``, ``hidden_size`` and ``heads`` parameters (the
  LLMDeployment's ``spec.triton.parameters``, rendered into ``config.pbtxt``) choose the
  architecture, so a revision with more layers is measurably slower, as a bigger model is.
- **A regression on demand**: ``slowdown_percent`` (a parameter, default 0) makes every
  forward pass (the prefill and each token) take that much longer, by sleeping for that
  share of the time it took: a revision exactly N% slower per token on an idle or busy
  machine alike, which the canary benchmarks grade the judge with.

- **vLLM's metrics**: it publishes, through the Python backend's custom metrics API, the
  request metrics of Triton's vLLM backend under the same names and the same labels
  (``model``, ``version``), so canaries of this model are judged on exactly the series a
  vLLM-backend model exposes: ``vllm:time_to_first_token_seconds``,
  ``vllm:time_per_output_token_seconds`` and ``vllm:e2e_request_latency_seconds``
  (histograms), ``vllm:prompt_tokens_total`` and ``vllm:generation_tokens_total``
  (counters). Two differences, both on purpose. The buckets are finer than vLLM's (one
  ladder for all three histograms, adjacent bounds at most 20% apart from 1 ms to 100 s),
  since vLLM's (e2e: 1, 2.5, 5, 10 s ...) cannot resolve a 20% change in requests of
  0.3-3 s. And time per output token is observed once per request, as
  (last token - first token) / (tokens - 1), where vLLM observes every inter-token gap:
  one call per request instead of one per token keeps the cost off a small CPU, and it
  is the definition the load generator uses, TPOT = (total - TTFT) / (tokens - 1). Times
  run from the moment ``execute`` received the request; failed requests are not observed.
  On a Triton without histogram metrics the model serves without them (with a warning).

Inputs: ``PROMPT`` (string) and optional ``MAX_TOKENS`` (int32). Output: ``TEXT``.
``../warmup/four`` is MAX_TOKENS 4 as raw little-endian int32, for a warm-up sample's
``inputDataFile`` (Triton reads it from the model's ``warmup/`` directory).
The instance kind chooses the device: ``KIND_GPU`` runs on the instance's GPU, ``KIND_CPU``
on the CPU. ``MODEL_TEMPERATURE`` in the environment sets sampling (0: greedy).
"""

from __future__ import annotations

import json
import os
import site
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The Python backend's embedded interpreter starts isolated: it ignores PYTHONPATH. The
# local stack (and any image whose torch lives outside the interpreter's own
# site-packages) names those directories there, so honour it before importing them.
for _entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _entry:
        site.addsitedir(_entry)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

VOCAB = 256  # one token per byte
FIRST_PRINTABLE, LAST_PRINTABLE = 32, 126  # sampled text stays printable ASCII

# Seconds. These mantissas keep adjacent bounds at most 20% apart from 1 ms to 100 s: no
# bucket is wider than the +20% a default criterion allows. Inside a wider bucket the
# interpolated quantile compresses a change between arms (bench/judge.py measured a true
# +30% end to end reading +24% with 33-50% wide buckets above 10 s); the verdict notes one.
_MANTISSAS = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0)
LATENCY_BUCKETS: list[float] = [
    *(round(m * 10.0**e, 6) for e in (-3, -2, -1, 0, 1) for m in _MANTISSAS),
    100.0,
]


@dataclass(frozen=True)
class Architecture:
    layers: int = 2
    hidden_size: int = 128
    heads: int = 4
    seed: int = 0
    max_prompt_bytes: int = 256
    max_tokens: int = 32  # when a request does not say
    max_tokens_limit: int = 512
    threads: int = 1  # torch intra-op threads per model instance
    slowdown_percent: int = 0  # each forward pass takes this much longer (a regression)

    @classmethod
    def from_parameters(cls, parameters: dict[str, dict[str, str]]) -> Architecture:
        values: dict[str, int] = {}
        for name in cls.__dataclass_fields__:
            raw = parameters.get(name, {}).get("string_value")
            if raw is None:
                continue
            try:
                values[name] = int(raw)
            except ValueError:
                raise pb_utils.TritonModelException(
                    f"parameter {name!r} must be an integer, got {raw!r}"
                ) from None
        arch = cls(**values)
        if arch.hidden_size % arch.heads:
            raise pb_utils.TritonModelException(
                f"hidden_size {arch.hidden_size} is not a multiple of heads {arch.heads}"
            )
        if min(arch.layers, arch.hidden_size, arch.heads, arch.threads) < 1:
            raise pb_utils.TritonModelException("layers, hidden_size, heads, threads must be >= 1")
        if arch.slowdown_percent < 0:
            raise pb_utils.TritonModelException("slowdown_percent must be >= 0")
        return arch


Cache = tuple[torch.Tensor, torch.Tensor]


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cache: Cache | None
    ) -> tuple[torch.Tensor, Cache]:
        batch, length, hidden = x.shape
        q, k, v = (
            self.qkv(x)
            .view(batch, length, 3, self.heads, hidden // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(batch, length, hidden)), (k, v)


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden)
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cache: Cache | None
    ) -> tuple[torch.Tensor, Cache]:
        attended, cache = self.attention(self.norm1(x), mask, cache)
        x = x + attended
        return x + self.mlp(self.norm2(x)), cache


class TinyLM(nn.Module):
    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, arch.hidden_size)
        self.position = nn.Embedding(
            arch.max_prompt_bytes + arch.max_tokens_limit, arch.hidden_size
        )
        self.blocks = nn.ModuleList(Block(arch.hidden_size, arch.heads) for _ in range(arch.layers))
        self.norm = nn.LayerNorm(arch.hidden_size)
        self.head = nn.Linear(arch.hidden_size, VOCAB, bias=False)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        caches: list[Cache | None],
    ) -> tuple[torch.Tensor, list[Cache | None]]:
        x = self.embed(tokens) + self.position(positions)
        new: list[Cache | None] = []
        for block, cache in zip(self.blocks, caches, strict=True):
            x, updated = block(x, mask, cache)
            new.append(updated)
        return self.head(self.norm(x)), new


class Generator:
    """Decodes a batch of prompts together, one forward pass per token for all of them."""

    def __init__(self, arch: Architecture, device: torch.device, temperature: float) -> None:
        torch.manual_seed(arch.seed)
        self.arch = arch
        self.device = device
        self.temperature = temperature
        self.model = TinyLM(arch).to(device).eval()
        allowed = torch.full((VOCAB,), float("-inf"))
        allowed[FIRST_PRINTABLE : LAST_PRINTABLE + 1] = 0.0
        self.allowed = allowed.to(device)

    def _pick(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        logits = logits + self.allowed
        if self.temperature <= 0:
            return logits.argmax(dim=-1)
        probabilities = torch.softmax(logits / self.temperature, dim=-1)
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)

    def _forward(self, *args: Any) -> tuple[torch.Tensor, list[Cache | None]]:
        """One forward pass, made ``slowdown_percent`` longer by sleeping (the sleep
        leaves the CPU to others, as a slower kernel on a GPU would)."""
        started = time.perf_counter()
        result = self.model(*args)
        if self.arch.slowdown_percent:
            time.sleep((time.perf_counter() - started) * self.arch.slowdown_percent / 100)
        return result

    def prompt_tokens(self, prompt: bytes) -> list[int]:
        """The tokens the model reads of ``prompt``: its tail, never nothing."""
        return list(prompt[-self.arch.max_prompt_bytes :]) or [FIRST_PRINTABLE]

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[bytes],
        max_tokens: list[int],
        emit: Callable[[int, bytes], None],
        finish: Callable[[int], None],
    ) -> None:
        """Call ``emit(i, token)`` for each new token of prompt ``i``, ``finish(i)`` after
        its last one. Prompts are left-padded so that every row ends at the same column."""
        rows = [self.prompt_tokens(p) for p in prompts]
        batch, width = len(rows), max(len(r) for r in rows)
        tokens = torch.zeros((batch, width), dtype=torch.long)
        valid = torch.zeros((batch, width), dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, width - len(row) :] = torch.tensor(row)
            valid[i, width - len(row) :] = True
        tokens, valid = tokens.to(self.device), valid.to(self.device)
        positions = (valid.cumsum(dim=1) - 1).clamp(min=0)
        causal = torch.ones((width, width), dtype=torch.bool, device=self.device).tril()
        eye = torch.eye(width, dtype=torch.bool, device=self.device)
        # A padding query that sees no key would give NaNs: let it see itself.
        mask = (causal & valid[:, None, None, :]) | eye
        logits, caches = self._forward(tokens, positions, mask, [None] * self.arch.layers)
        last = logits[:, -1]
        next_position = valid.sum(dim=1)
        remaining = list(max_tokens)
        generator = torch.Generator(device=self.device).manual_seed(self.arch.seed)
        while True:
            chosen = self._pick(last, generator)
            picked = chosen.tolist()
            for i in range(batch):
                if remaining[i] > 0:
                    emit(i, bytes([picked[i]]))
                    remaining[i] -= 1
                    if remaining[i] == 0:
                        finish(i)
            if not any(r > 0 for r in remaining):
                return
            grown = torch.ones((batch, 1), dtype=torch.bool, device=self.device)
            valid = torch.cat([valid, grown], dim=1)
            logits, caches = self._forward(
                chosen[:, None], next_position[:, None], valid[:, None, None, :], caches
            )
            next_position = next_position + 1
            last = logits[:, -1]


class Metrics:
    """The vLLM backend's request metrics (names, kinds, labels) for one model version."""

    def __init__(self, model: str, version: str) -> None:
        labels = {"model": model, "version": version}
        # A family must outlive its metrics (the backend refuses to use them otherwise).
        self._families: list[Any] = []

        def family(name: str, description: str, kind: Any) -> Any:
            created = pb_utils.MetricFamily(name=name, description=description, kind=kind)
            self._families.append(created)
            return created

        def histogram(name: str, description: str) -> Any:
            kind = pb_utils.MetricFamily.HISTOGRAM
            return family(name, description, kind).Metric(labels=labels, buckets=LATENCY_BUCKETS)

        counter = pb_utils.MetricFamily.COUNTER
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."
        )
        self.tpot = histogram(
            "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds."
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
        )
        self.prompt_tokens = family(
            "vllm:prompt_tokens_total", "Number of prefill tokens processed.", counter
        ).Metric(labels=labels)
        self.generation_tokens = family(
            "vllm:generation_tokens_total", "Number of generation tokens processed.", counter
        ).Metric(labels=labels)

    @classmethod
    def create(cls, model: str, version: str) -> Metrics | None:
        """The metrics, or None (and a warning) where this Triton cannot make them: the
        model serves either way."""
        try:
            return cls(model, version)
        except Exception as exc:  # older Tritons lack histograms, or custom metrics at all
            pb_utils.Logger.log_warn(f"tiny-llm serves without vLLM metrics: {exc}")
            return None


class RequestClock:
    """Timestamps of the requests of one ``execute`` call. ``report`` turns them into
    observations once the batch's last token is out: metric calls (a round trip to the
    server each) never sit between two tokens."""

    def __init__(self, received: float, prompt_tokens: list[int], output_tokens: list[int]) -> None:
        self.received = received
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.first: list[float | None] = [None] * len(output_tokens)
        self.last: list[float | None] = [None] * len(output_tokens)

    def token(self, i: int) -> None:
        """Request ``i``'s latest token was sent (or produced)."""
        if self.first[i] is None:
            self.first[i] = time.perf_counter()

    def finished(self, i: int) -> None:
        """Request ``i``'s final token was sent (or produced)."""
        self.last[i] = time.perf_counter()

    def report(self, metrics: Metrics | None, responded: float | None = None) -> None:
        """Observe every finished request. ``responded``: when the responses left, where
        that is later than each request's last token (one response for the whole text)."""
        if metrics is None:
            return
        prompt = generated = 0
        for i, (first, last) in enumerate(zip(self.first, self.last, strict=True)):
            if first is None or last is None:
                continue
            tokens = self.output_tokens[i]
            metrics.ttft.observe(first - self.received)
            if tokens >= 2:
                metrics.tpot.observe((last - first) / (tokens - 1))
            metrics.e2e.observe((last if responded is None else responded) - self.received)
            prompt += self.prompt_tokens[i]
            generated += tokens
        # One increment per batch, not per request: fewer round trips.
        if generated:
            metrics.prompt_tokens.increment(prompt)
            metrics.generation_tokens.increment(generated)


def _text(value: str | bytes) -> Any:
    return pb_utils.Tensor("TEXT", np.array([[value]], dtype=np.object_))


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config: Any) -> Any:
        """Declare the inputs and outputs; the operator renders everything else."""
        present = config.as_dict()
        have_inputs = {i["name"] for i in present.get("input", [])}
        have_outputs = {o["name"] for o in present.get("output", [])}
        for spec in (
            {"name": "PROMPT", "data_type": "TYPE_STRING", "dims": [1]},
            {"name": "MAX_TOKENS", "data_type": "TYPE_INT32", "dims": [1], "optional": True},
        ):
            if spec["name"] not in have_inputs:
                config.add_input(spec)
        if "TEXT" not in have_outputs:
            config.add_output({"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]})
        return config

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.arch = Architecture.from_parameters(config.get("parameters", {}))
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        if args.get("model_instance_kind") == "GPU":
            device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            device = torch.device("cpu")
            torch.set_num_threads(self.arch.threads)
        temperature = float(os.environ.get("MODEL_TEMPERATURE", "0") or 0)
        self.generator = Generator(self.arch, device, temperature)
        self.metrics = Metrics.create(args["model_name"], args["model_version"])
        pb_utils.Logger.log_info(
            f"tiny-llm ready: {self.arch} on {device}, decoupled={self.decoupled},"
            f" temperature={temperature}"
        )

    def _read(self, request: Any) -> tuple[bytes, int]:
        prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy().reshape(-1)[0]
        if isinstance(prompt, str):
            prompt = prompt.encode()
        wanted = pb_utils.get_input_tensor_by_name(request, "MAX_TOKENS")
        count = self.arch.max_tokens if wanted is None else int(wanted.as_numpy().reshape(-1)[0])
        if not 1 <= count <= self.arch.max_tokens_limit:
            raise ValueError(f"MAX_TOKENS must be 1..{self.arch.max_tokens_limit}, got {count}")
        return bytes(prompt), count

    def execute(self, requests: list[Any]) -> list[Any] | None:
        received = time.perf_counter()
        accepted: list[tuple[int, bytes, int]] = []
        failed: dict[int, str] = {}
        for index, request in enumerate(requests):
            try:
                prompt, count = self._read(request)
            except ValueError as exc:
                failed[index] = str(exc)
            else:
                accepted.append((index, prompt, count))
        clock = RequestClock(
            received,
            [len(self.generator.prompt_tokens(p)) for _, p, _ in accepted],
            [c for _, _, c in accepted],
        )
        if self.decoupled:
            self._stream(requests, accepted, failed, clock)
            return None
        return self._whole(requests, accepted, failed, clock)

    def _stream(
        self,
        requests: list[Any],
        accepted: list[tuple[int, bytes, int]],
        failed: dict[int, str],
        clock: RequestClock,
    ) -> None:
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for index, message in failed.items():
            requests[index].get_response_sender().send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(message)), flags=final
            )
        senders = [requests[index].get_response_sender() for index, _, _ in accepted]

        def emit(i: int, token: bytes) -> None:
            senders[i].send(pb_utils.InferenceResponse(output_tensors=[_text(token)]))
            clock.token(i)

        def finish(i: int) -> None:
            senders[i].send(flags=final)
            clock.finished(i)

        if accepted:
            self.generator.generate(
                [p for _, p, _ in accepted], [c for _, _, c in accepted], emit, finish
            )
            clock.report(self.metrics)

    def _whole(
        self,
        requests: list[Any],
        accepted: list[tuple[int, bytes, int]],
        failed: dict[int, str],
        clock: RequestClock,
    ) -> list[Any]:
        texts: list[list[bytes]] = [[] for _ in accepted]

        def emit(i: int, token: bytes) -> None:
            texts[i].append(token)
            clock.token(i)

        if accepted:
            self.generator.generate(
                [p for _, p, _ in accepted], [c for _, _, c in accepted], emit, clock.finished
            )
        responses: list[Any] = [None] * len(requests)
        for index, message in failed.items():
            responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
        for (index, _, _), text in zip(accepted, texts, strict=True):
            responses[index] = pb_utils.InferenceResponse(output_tensors=[_text(b"".join(text))])
        if accepted:
            # Every text leaves in this one batch of responses: that ends each request.
            clock.report(self.metrics, responded=time.perf_counter())
        return responses
