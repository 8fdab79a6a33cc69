"""Dynamic batching on real Triton: tiny-llm with and without it, same load.

Starts the nvidia-pytriton wheel's tritonserver on a loopback address twice, each time with the
config.pbtxt the operator renders (llmcanary.builders.triton_config) for tiny-llm on
KIND_CPU, once with ``dynamic_batching`` and once without, and drives the same
closed-loop streaming load (llmcanary_dev.loadgen) at each. Prints throughput, latency and
Triton's own request and execution counts side by side; ``--json FILE`` keeps them.

    .venv/bin/python bench/dynamic_batching.py --concurrency 16 --duration 30

Runs on the CPU; on a GPU machine pass --kind KIND_GPU.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.triton_config import render_config_pbtxt
from llmcanary.builders.workload import tritonserver_args
from llmcanary_dev.devcluster.paths import find_repo_root
from llmcanary_dev.loadgen.client import LoadConfig, run_load
from llmcanary_dev.loadgen.stats import summarize
from llmcanary_dev.localstack.pods import triton_argv
from llmcanary_dev.localstack.process import ManagedProcess
from llmcanary_dev.localstack.triton import find_triton

MODEL = "tiny-llm"


def spec(batching: bool, kind: str, max_batch: int) -> LLMDeploymentSpec:
    triton: dict[str, Any] = {
        "image": "unused",
        "maxBatchSize": max_batch,
        "instanceGroup": {"kind": kind, "count": 1},
        "decoupled": True,
    }
    if batching:
        triton["dynamicBatching"] = {"maxQueueDelayMicroseconds": 2000}
    return LLMDeploymentSpec.model_validate(
        {
            "model": {"name": MODEL, "repository": "/unused", "version": "1"},
            "triton": triton,
            "replicas": 1,
            "resources": {"gpus": 1},
        }
    )


def counters(metrics_url: str) -> dict[str, float]:
    text = requests.get(metrics_url, timeout=5).text
    out = {}
    for name in ("nv_inference_request_success", "nv_inference_exec_count", "nv_inference_count"):
        match = re.search(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)
        out[name] = float(match.group(1)) if match else 0.0
    return out


def run_one(batching: bool, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    the_spec = spec(batching, args.kind, args.max_batch_size)
    repo = work / ("batching" if batching else "plain") / "models"
    model_dir = repo / MODEL
    model_dir.mkdir(parents=True)
    (model_dir / "1").symlink_to(find_repo_root() / "model_repo" / MODEL / "1")
    (model_dir / "config.pbtxt").write_text(render_config_pbtxt(the_spec.model, the_spec.triton))
    install = find_triton(work / "triton")
    # The operator's own arguments, as the local data plane runs them for a pod, on a
    # loopback address of its own: the pod ports 8000/8002 are free there.
    address = "127.246.0.1"
    http, metrics = f"http://{address}:8000", f"http://{address}:8002"
    argv = triton_argv({"args": tritonserver_args(the_spec)}, install, repo, address)
    process = ManagedProcess("triton", work / f"triton-{'batching' if batching else 'plain'}.log")
    process.start(argv, env=install.environment())
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{http}/v2/health/ready", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if not process.running or time.monotonic() > deadline:
                raise SystemExit(f"Triton did not start:\n{process.log_tail(30)}")
            time.sleep(0.2)
        config = LoadConfig(
            url=http,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            duration_s=args.duration,
            prompt_length=args.prompt_length,
            max_tokens=args.max_tokens,
        )
        before = counters(f"{metrics}/metrics")
        results, measured = run_load(config)
        after = counters(f"{metrics}/metrics")
    finally:
        process.stop()
    summary = summarize(results, measured)
    requests_done = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    return {
        "dynamic_batching": batching,
        "summary": summary.as_dict(),
        "triton_requests": requests_done,
        "triton_executions": executions,
        "requests_per_execution": requests_done / executions if executions else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--kind", default="KIND_CPU", choices=["KIND_CPU", "KIND_GPU"])
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmcanary-bench-") as tmp:
        runs = [run_one(batching, args, Path(tmp)) for batching in (False, True)]
    print(
        f"tiny-llm on {args.kind}, concurrency {args.concurrency}, {args.duration:.0f}s measured,"
        f" prompt {args.prompt_length} chars, {args.max_tokens} output tokens, max batch"
        f" {args.max_batch_size}"
    )
    header = f"{'':28}{'without':>14}{'with':>14}"
    print(header)
    rows = [
        ("requests/s", lambda r: r["summary"]["requests_per_s"], "{:.1f}"),
        ("output tokens/s", lambda r: r["summary"]["output_tokens_per_s"], "{:.0f}"),
        ("latency p50 (ms)", lambda r: r["summary"]["latency_ms"]["p50"], "{:.0f}"),
        ("latency p95 (ms)", lambda r: r["summary"]["latency_ms"]["p95"], "{:.0f}"),
        ("TTFT p95 (ms)", lambda r: r["summary"]["ttft_ms"]["p95"], "{:.0f}"),
        ("TPOT p50 (ms)", lambda r: r["summary"]["tpot_ms"]["p50"], "{:.2f}"),
        ("errors", lambda r: sum(r["summary"]["errors"].values()), "{}"),
        ("Triton requests", lambda r: r["triton_requests"], "{:.0f}"),
        ("Triton executions", lambda r: r["triton_executions"], "{:.0f}"),
        ("requests per execution", lambda r: r["requests_per_execution"] or 0, "{:.2f}"),
    ]
    for label, get, fmt in rows:
        print(f"{label:28}{fmt.format(get(runs[0])):>14}{fmt.format(get(runs[1])):>14}")
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs}, indent=2)
        )


if __name__ == "__main__":
    main()
