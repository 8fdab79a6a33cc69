"""Render Triton's ``config.pbtxt`` (protobuf text format) from the spec."""

from __future__ import annotations

import json

from llmcanary.api.spec import DynamicBatching, ModelSpec, TritonSpec


def _quote(text: str) -> str:
    # JSON string escaping is a subset protobuf text format accepts.
    return json.dumps(text)


def _dynamic_batching(batching: DynamicBatching) -> list[str]:
    lines = ["dynamic_batching {"]
    if batching.preferred_batch_sizes:
        sizes = ", ".join(str(s) for s in batching.preferred_batch_sizes)
        lines.append(f"  preferred_batch_size: [ {sizes} ]")
    lines.append(f"  max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}")
    lines.append(f"  preserve_ordering: {str(batching.preserve_ordering).lower()}")
    policy = batching.default_queue_policy
    if policy is not None:
        lines += [
            "  default_queue_policy {",
            f"    timeout_action: {policy.timeout_action}",
            f"    default_timeout_microseconds: {policy.default_timeout_microseconds}",
            f"    allow_timeout_override: {str(policy.allow_timeout_override).lower()}",
            f"    max_queue_size: {policy.max_queue_size}",
            "  }",
        ]
    lines.append("}")
    return lines


def render_config_pbtxt(model: ModelSpec, triton: TritonSpec) -> str:
    """The model configuration Triton loads for this revision.

    Inputs and outputs are left to the backend's auto-complete (the Python backend's
    ``auto_complete_config``), so the operator renders only what the spec decides.
    """
    lines = [
        f"name: {_quote(model.name)}",
        f"backend: {_quote(triton.backend)}",
        f"max_batch_size: {triton.max_batch_size}",
    ]
    if triton.dynamic_batching is not None:
        lines += _dynamic_batching(triton.dynamic_batching)
    group = triton.instance_group
    lines += [
        "instance_group [",
        "  {",
        f"    count: {group.count}",
        f"    kind: {group.kind}",
        "  }",
        "]",
    ]
    if triton.decoupled:
        lines += ["model_transaction_policy {", "  decoupled: true", "}"]
    for key in sorted(triton.parameters):
        lines += [
            "parameters {",
            f"  key: {_quote(key)}",
            f"  value: {{ string_value: {_quote(triton.parameters[key])} }}",
            "}",
        ]
    return "\n".join(lines) + "\n"
