"""The judge on real components: rollouts of tiny-llm on the local stack, truth known.

Part (b) of the judge's benchmark (``bench/judge.py`` is part (a), the simulation). The
local stack (``llmcanary stack up``: the dev cluster, one real ``tritonserver`` per pod,
Prometheus, Traefik), the operator as a process, steady closed-loop streaming load through
the gateway, and ``examples/local/tiny-llm.yaml`` exactly as it is (the product's rule: +20%
on end-to-end, TTFT and TPOT P95, the default minimum of requests, a fresh baseline).
Then, one after another:

- ``--aa N`` A/A rollouts: only ``model.version`` changes (an identical revision);
- one rollout per ``--slowdowns`` percentage: tiny-llm's ``slowdown_percent`` makes every
  forward pass that much slower (per token, whatever the load), largest first, so that a
  regression promoted by mistake does not become the reference of the next one.

For each rollout it prints the outcome, the highest weight the canary got, the checks,
the seconds to the decision and the requests each arm served (the gateway's access log), as
Markdown for docs/benchmarks.md (``--markdown FILE``; ``--json FILE`` keeps the rows).

    .venv/bin/python bench/judge_stack.py --aa 5 --slowdowns 50 30 20 10
    .venv/bin/python bench/judge_stack.py --metrics triton --aa 3 --slowdowns 50 30
    .venv/bin/python bench/judge_stack.py --metrics traefik --aa 3 --slowdowns 50 30
    .venv/bin/python bench/judge_stack.py --metrics endpointPicker --aa 3 --slowdowns 50 30

Not a test: nothing here asserts. It needs what ``make demo`` needs (the cached binaries
of ``make cluster-bins prometheus-bin traefik-bin``, the tiny-llm venv) and ~3 minutes per
rollout on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from llmcanary_dev.demo.story import SMALL, Chapter, Story
from llmcanary_dev.demo.timeline import outcomes
from llmcanary_dev.localstack import stack as local

# --metrics triton: the canary judged on Triton's own summary instead of tiny-llm's
# histograms. One step at 50% (the most a fresh baseline allows): a step on the summary
# is judged after five of its minutes at the soonest.
SUMMARY = {
    "canary": {"initialWeight": 50, "initialStepInterval": "5m", "analysis": {"metrics": "triton"}}
}


# --metrics traefik: the canary judged on what the gateway measured per arm (end-to-end
# latency and 5xx), with the example's steps.
GATEWAY = {"canary": {"analysis": {"metrics": "traefik"}}}
# --metrics endpointPicker: the example routed through InferencePools (the stack's
# inference gateway) and judged on each pool's picker's series, with the example's steps.
PICKER = {"canary": {"analysis": {"metrics": "endpointPicker"}}}


def chapters(aa: int, slowdowns: list[int], metrics: str) -> tuple[Chapter, ...]:
    judged = {"triton": SUMMARY, "traefik": GATEWAY, "endpointPicker": PICKER}.get(metrics, {})
    out = [
        Chapter(f"A/A {i + 1}", {**judged, "model": {"version": str(10 + i)}}, "Stable")
        for i in range(aa)
    ]
    for percent in sorted(slowdowns, reverse=True):
        out.append(
            Chapter(
                f"+{percent}% per token",
                {
                    **judged,
                    "model": {"version": str(100 + percent)},
                    "triton": {"parameters": {**SMALL, "slowdown_percent": str(percent)}},
                },
                # The rule: +20% rolls back. At +20% exactly either outcome is right.
                "RolledBack" if percent > 20 else "Stable",
            )
        )
    return tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aa", type=int, default=5, help="A/A rollouts")
    parser.add_argument("--slowdowns", type=int, nargs="*", default=[50, 30, 20, 10])
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop streams")
    parser.add_argument(
        "--metrics",
        choices=["tritonVLLM", "triton", "traefik", "endpointPicker"],
        default="tritonVLLM",
        help="the preset the canaries are judged on (triton: Triton's summary, one step;"
        " traefik: the gateway's per-arm histograms; endpointPicker: through InferencePools,"
        " each pool's picker's histograms)",
    )
    parser.add_argument("--markdown", type=Path, help="write the table here too")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()

    settings = local.StackSettings.from_env()
    story = Story(
        settings,
        say=lambda line: print(line, flush=True),
        chapters=chapters(args.aa, args.slowdowns, args.metrics),
        strict=False,
        concurrency=args.concurrency,
        rollout_timeout_s=900.0,
        router="inferencePool" if args.metrics == "endpointPicker" else "gatewayAPI",
    )
    started = time.time()
    story.run()
    rows: list[dict[str, Any]] = []
    for row in outcomes(story.samples):
        if row.label == "v1":
            continue
        shares = story.shares.get(row.label, {})
        chapter = next(c for c in story.chapters if c.label == row.label)
        rows.append(
            {
                "rollout": row.label,
                "expected": chapter.expect,
                "outcome": row.result,
                "max_weight": row.max_weight,
                "checks": row.checks,
                "seconds": round(row.seconds),
                "canary_requests": shares.get("tiny-llm-canary", 0),
                "baseline_requests": shares.get("tiny-llm-baseline", 0),
                "stable_requests": shares.get("tiny-llm-stable", 0),
            }
        )
    minutes = (time.time() - started) / 60
    lines = [
        f"Local stack, {platform.machine()}, {os.cpu_count()} cores, {args.concurrency} streams,"
        f" examples/local/tiny-llm.yaml as committed"
        + {
            "triton": ", judged on Triton's summary in one step at 50%",
            "traefik": ", judged on the gateway's per-arm histograms (metrics: traefik)",
            "endpointPicker": ", routed through InferencePools and judged on each pool's"
            " picker's histograms (router inferencePool, metrics: endpointPicker)",
        }.get(args.metrics, "")
        + f"; {minutes:.0f} min in all.",
        "",
        "| rollout | expected | outcome | max weight | checks | seconds |"
        " requests canary / baseline / stable |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rollout']} | {r['expected']} | {r['outcome']} | {r['max_weight']}% |"
            f" {r['checks']} | {r['seconds']} | {r['canary_requests']} /"
            f" {r['baseline_requests']} / {r['stable_requests']} |"
        )
    aa = [r for r in rows if r["rollout"].startswith("A/A")]
    wrong = [r for r in rows if r["outcome"] != r["expected"] and "+20%" not in r["rollout"]]
    lines += [
        "",
        f"A/A rolled back: {sum(r['outcome'] == 'RolledBack' for r in aa)} of {len(aa)};"
        f" outcomes other than expected (+20% excluded): {len(wrong)}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
