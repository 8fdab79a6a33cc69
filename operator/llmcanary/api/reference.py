"""The CRD reference in Markdown, generated from the same schema as the CRD.

:func:`render_reference` walks the ``openAPIV3Schema`` that :func:`llmcanary.api.crd.build_crd`
produces (so from the pydantic models) and writes one section per object, with a table of
its fields: type, default, whether it is required, the validation the API server applies
(enum, bounds, lengths, pattern, list keys, CEL rules with their messages) and the
description. ``docs/reference/llmdeployment.md`` is its output; a unit test fails when the
committed file and the models disagree. Pure and deterministic: no clock, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmcanary.api import GROUP, KIND, PLURAL, SHORT_NAMES, VERSION
from llmcanary.api.crd import build_crd

REFERENCE_PATH = "docs/reference/llmdeployment.md"
REGENERATE = "make docs"  # or: llmcanary crd --reference > docs/reference/llmdeployment.md


@dataclass(frozen=True)
class _Section:
    path: str  # e.g. "spec.canary.analysis", "spec.env[]"
    node: dict[str, Any]


_CEL = "x-kubernetes-validations"


def _anchor(path: str) -> str:
    """GitHub's heading anchor for a heading that is exactly ``path``."""
    return re.sub(r"[^a-z0-9_-]", "", path.lower())


def _cell(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: str) -> str:
    """An inline code span that survives backticks inside ``value``."""
    fence = "``" if "`" in value else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _is_object(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" and "properties" in node


def _sections(path: str, node: dict[str, Any]) -> Iterator[_Section]:
    """Every object with fields below (and including) ``node``, depth first, in field order."""
    if _is_object(node):
        yield _Section(path, node)
        for key, child in node["properties"].items():
            yield from _sections(f"{path}.{key}" if path else key, child)
    elif node.get("type") == "array" and isinstance(node.get("items"), dict):
        yield from _sections(f"{path}[]", node["items"])
    elif node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        yield from _sections(f"{path}{{}}", node["additionalProperties"])


def _type(path: str, node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = node.get("type", "any")
    if _is_object(node):
        return f"[object](#{_anchor(path)})"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        values = node["additionalProperties"]
        if _is_object(values):
            return f"[map[string]object](#{_anchor(path + '{}')})"
        return f"map[string]{values.get('type', 'any')}"
    if kind == "array" and isinstance(node.get("items"), dict):
        items = node["items"]
        if _is_object(items):
            return f"[[]object](#{_anchor(path + '[]')})"
        return f"[]{items.get('type', 'any')}"
    return str(kind)


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if isinstance(value, dict) and _is_object(node):
        return "its fields' defaults"
    return _code(_json(value))


def _bound(node: dict[str, Any], key: str, exclusive: str, op: str, strict: str) -> str | None:
    if key not in node:
        return None
    return f"{strict if node.get(exclusive) else op} {node[key]:g}"


def _validation(node: dict[str, Any]) -> list[str]:
    rules: list[str] = []
    if "enum" in node:
        rules.append("one of " + ", ".join(_code(str(v)) for v in node["enum"]))
    low = _bound(node, "minimum", "exclusiveMinimum", ">=", ">")
    high = _bound(node, "maximum", "exclusiveMaximum", "<=", "<")
    rules.extend(b for b in (low, high) if b)
    if "minLength" in node and "maxLength" in node:
        rules.append(f"{node['minLength']} to {node['maxLength']} characters")
    elif "minLength" in node:
        rules.append(f"at least {node['minLength']} characters")
    elif "maxLength" in node:
        rules.append(f"at most {node['maxLength']} characters")
    if "minItems" in node:
        rules.append(f"at least {node['minItems']} items")
    if "maxItems" in node:
        rules.append(f"at most {node['maxItems']} items")
    if "minProperties" in node:
        rules.append(f"at least {node['minProperties']} entries")
    if "maxProperties" in node:
        rules.append(f"at most {node['maxProperties']} entries")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys", []))
        rules.append(f"unique by {keys}")
    if "pattern" in node:
        rules.append(f"pattern {_code(node['pattern'])}")
    if "properties" not in node:  # an object's rules are listed in its own section
        rules.extend(f"{_code(r['rule'])}: {r['message']}" for r in node.get(_CEL, []))
    return rules


def _cel_rules(node: dict[str, Any]) -> list[str]:
    lines = []
    for rule in node.get(_CEL, []):
        where = (
            f" (reported at {_code(rule['fieldPath'].lstrip('.'))})" if "fieldPath" in rule else ""
        )
        lines.append(f'- {_code(rule["rule"])}: "{rule["message"]}"{where}')
    return lines


def _description(node: dict[str, Any]) -> str:
    text = str(node.get("description", ""))
    # The models' docstrings are reStructuredText; double backticks read the same in Markdown.
    return text.replace("``", "`")


def _section_lines(section: _Section, level: int) -> list[str]:
    node = section.node
    lines = [f"{'#' * level} {section.path}", ""]
    description = _description(node)
    if description:
        lines += [description, ""]
    cel = _cel_rules(node)
    if cel:
        lines += ["Rules on this object (CEL, checked by the API server):", "", *cel, ""]
    required = set(node.get("required", []))
    lines += [
        "| Field | Type | Default | Required | Validation | Description |",
        "|---|---|---|---|---|---|",
    ]
    for key, child in node["properties"].items():
        path = f"{section.path}.{key}"
        row = [
            _code(key),
            _type(path, child),
            _default(child),
            "yes" if key in required else "",
            "; ".join(_validation(child)),
            _description(child),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines.append("")
    return lines


def render_reference() -> str:
    """The Markdown reference of the ``LLMDeployment`` CRD."""
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    lines = [
        f"# {KIND} reference",
        "",
        "<!-- Generated by `llmcanary crd --reference` from operator/llmcanary/api (the pydantic"
        f" models that also generate crds/). Do not edit: change the models and run"
        f" `{REGENERATE}`. -->",
        "",
        f"`apiVersion: {GROUP}/{VERSION}`, `kind: {KIND}`: namespaced; plural `{PLURAL}`, short"
        f" name{'s' if len(SHORT_NAMES) > 1 else ''} "
        + ", ".join(f"`{s}`" for s in SHORT_NAMES)
        + ", category `llmcanary`; the status is a subresource written only by the operator."
        " The API server applies every default and rule below at `kubectl apply`"
        " (`kubectl explain llmd.spec` shows the same schema).",
        "",
        "Durations are Go/CEL durations made of `ms`, `s`, `m` and `h` parts (`90s`, `1h30m`);"
        " quantities are Kubernetes quantities (`8`, `500m`, `64Gi`). An object whose default"
        ' is "its fields\' defaults" is filled in even when omitted.',
        "",
        "## Contents",
        "",
    ]
    sections = [s for s in _sections("", root) if s.path]
    for section in sections:
        depth = section.path.count(".")
        lines.append(f"{'  ' * depth}- [{section.path}](#{_anchor(section.path)})")
    lines += ["- [Printer columns](#printer-columns)", ""]

    lines += ["## The object", ""]
    cel = _cel_rules(root)
    if cel:
        lines += ["Rules on the whole object (CEL, checked by the API server):", "", *cel, ""]
    lines += [
        "| Field | Type | Required | Description |",
        "|---|---|---|---|",
    ]
    required = set(root.get("required", []))
    for key, child in root["properties"].items():
        row = [_code(key), _type(key, child), "yes" if key in required else "", ""]
        row[3] = _description(child) or {
            "apiVersion": f"`{GROUP}/{VERSION}`",
            "kind": f"`{KIND}`",
            "metadata": "Standard object metadata.",
        }.get(key, "")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines.append("")

    for section in sections:
        lines += _section_lines(section, 2 if section.path.count(".") == 0 else 3)

    lines += [
        "## Printer columns",
        "",
        "`kubectl get llmd` shows the columns of priority 0; `-o wide` adds the others.",
        "",
        "| Column | Type | JSONPath | Priority | Description |",
        "|---|---|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns", []):
        row = [
            column["name"],
            column["type"],
            _code(column["jsonPath"]),
            str(column.get("priority", 0)),
            column.get("description", ""),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines.append("")
    return "\n".join(lines)


__all__ = ["REFERENCE_PATH", "REGENERATE", "render_reference"]
