"""PURE: an LLMDeployment (as the API returns it) -> the text ``llmcanary status`` prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from llmcanary.api import ANNOTATION_PAUSED, REQUEST_ANNOTATIONS
from llmcanary.api.spec import AnalysisSpec

_DEFAULTS = AnalysisSpec()
NONE = "-"


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _text(value: Any) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else NONE


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns; the last column is never padded."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def newest_first(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """By finish (else start) time, newest first; entries without a time last, later ones first."""

    def key(item: tuple[int, Mapping[str, Any]]) -> tuple[int, float, int]:
        index, entry = item
        when = _when(entry.get("finishedAt")) or _when(entry.get("startedAt"))
        if when is None:
            return (0, 0.0, index)
        return (1, when.timestamp(), index)

    return [entry for _, entry in sorted(enumerate(history), key=key, reverse=True)]


def _header(obj: Mapping[str, Any]) -> str:
    meta, spec, status = _map(obj.get("metadata")), _map(obj.get("spec")), _map(obj.get("status"))
    name = str(meta.get("name", "?"))
    if meta.get("namespace"):
        name = f"{name} ({meta['namespace']})"
    weight = status.get("canaryWeight")
    router = status.get("router") or _map(spec.get("traffic")).get("router")
    fields = [
        ("stable", _text(status.get("stableRevision"))),
        ("canary", _text(status.get("canaryRevision"))),
        ("weight", f"{weight}%" if isinstance(weight, int) else NONE),
        ("step", _text(status.get("currentStep"))),
        ("router", _text(router)),
    ]
    phase = _text(status.get("phase"))
    return f"{name}  {phase}  " + "  ".join(f"{k} {v}" for k, v in fields)


def _control_lines(obj: Mapping[str, Any]) -> list[str]:
    meta, spec, status = _map(obj.get("metadata")), _map(obj.get("spec")), _map(obj.get("status"))
    annotations = _map(meta.get("annotations"))
    lines = []
    if status.get("pauseReason"):
        lines.append(f"Paused: {status['pauseReason']}")
    if spec.get("paused") is True:
        lines.append("Paused by spec.paused: change the spec (in Git) to continue")
    if annotations.get(ANNOTATION_PAUSED) == "true":
        lines.append(f"Paused by annotation {ANNOTATION_PAUSED}=true (llmcanary resume NAME)")
    if status.get("message"):
        lines.append(f"Message: {status['message']}")
    if status.get("canaryReplicas") is not None:
        ready = status.get("canaryReadyReplicas") or 0
        lines.append(f"Canary replicas: {ready}/{status['canaryReplicas']} ready")
    if status.get("replicas") is not None:
        lines.append(
            f"Replicas: {_text(status.get('readyReplicas') or 0)}/{status['replicas']} ready"
        )
    if status.get("rolledBackRevision"):
        lines.append(
            f"Rolled back revision: {status['rolledBackRevision']}"
            " (not tried again until the spec changes or a retry is requested)"
        )
    handled = _map(status.get("handledRequests"))
    for annotation in REQUEST_ANNOTATIONS:
        value = annotations.get(annotation)
        if value and handled.get(annotation) != value:
            verb = annotation.rsplit("/", 1)[-1]
            lines.append(f"Requested: {verb} at {value} (not yet acted on)")
    return lines


def _analysis_lines(obj: Mapping[str, Any]) -> list[str]:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    analysis = _map(status.get("lastAnalysis"))
    lines: list[str] = []
    if analysis:
        verdict = _text(analysis.get("verdict"))
        reason = analysis.get("reason")
        lines.append(f"Last analysis: {verdict} at {_text(analysis.get('time'))}")
        if reason:
            lines.append(f"  {reason}")
        reference = _text(analysis.get("reference")) if analysis.get("reference") else "stable"
        context = [f"against the {reference}"]
        if analysis.get("since"):
            context.append(f"requests since {_text(analysis.get('since'))}")
        if analysis.get("loadRatio") is not None:
            context.append(f"per-pod load canary/{reference} {analysis['loadRatio']:.2f}")
        if analysis.get("needed") is not None:
            context.append(f"~{analysis['needed']} more requests per arm to decide")
        lines.append(f"  ({'; '.join(context)})")
        rows = []
        for record in (_map(c) for c in _list(analysis.get("criteria"))):
            unit = _text(record.get("unit"))
            canary, theirs = _map(record.get("canary")), _map(record.get("reference"))
            fmt = ".1f" if unit == "ms" else ".2f"
            rows.append(
                [
                    _text(record.get("criterion")),
                    _text(record.get("verdict")),
                    f"{_number(canary.get('value'), fmt)} {unit}",
                    f"{_number(theirs.get('value'), fmt)} {unit}",
                    _effect(record, unit),
                    " / ".join(_number(arm.get("samples"), "d") for arm in (canary, theirs)),
                ]
            )
        if rows:
            header = ["CRITERION", "VERDICT", "CANARY", reference.upper(), "EFFECT (BOUNDS)"]
            lines += table([*header, f"SAMPLES C/{reference[0].upper()}"], rows)
    failed, inconclusive = status.get("failedChecks"), status.get("inconclusiveChecks")
    if analysis or failed is not None or inconclusive is not None:
        limits = _map(_map(spec.get("canary")).get("analysis"))
        failure_limit = limits.get("failureLimit", _DEFAULTS.failure_limit)
        inconclusive_limit = limits.get("inconclusiveLimit", _DEFAULTS.inconclusive_limit)
        lines.append(
            f"Checks: failed {failed or 0}/{failure_limit} (rollback at the limit),"
            f" inconclusive {inconclusive or 0}/{inconclusive_limit} (pause at the limit)"
        )
    return lines


def _tristate(value: Any, true: str, false: str, unknown: str) -> str:
    return true if value is True else false if value is False else unknown


def _preflight_lines(status: Mapping[str, Any]) -> list[str]:
    preflight = _map(status.get("preflight"))
    if not preflight:
        return []
    verdict = _tristate(preflight.get("passed"), "passed", "FAILED", "running")
    lines = [
        f"Preflight of {_text(preflight.get('revision'))}: {verdict}"
        + (f" at {preflight['checkedAt']}" if preflight.get("checkedAt") else "")
    ]
    if preflight.get("reason"):
        lines.append(f"  {preflight['reason']}")
    differences = [_map(d) for d in _list(preflight.get("envDiff"))]
    if differences:
        rows = [
            [
                _text(d.get("key")),
                _text(d.get("stable")),
                _text(d.get("canary")),
                "allowed" if d.get("allowed") else "NOT ALLOWED",
            ]
            for d in differences
        ]
        lines += table(["ENV DIFF", "STABLE", "CANARY", ""], rows)
    gpu = _map(preflight.get("gpuMemory"))
    if gpu:
        fits = _tristate(gpu.get("fits"), "fits", "DOES NOT FIT", "not checked")
        lines.append(f"  GPU memory: {fits}: {gpu.get('message', '')}")
    dependencies = [_map(d) for d in _list(preflight.get("dependencies"))]
    if dependencies:
        rows = [
            [
                _text(d.get("name")),
                "ok" if d.get("ok") else "FAIL",
                _number(d.get("latencyMs"), ".1f"),
                _number(d.get("statusCode"), "d"),
                d.get("message", ""),
            ]
            for d in dependencies
        ]
        lines += table(["DEPENDENCY", "OK", "LATENCY MS", "STATUS", "MESSAGE"], rows)
    return lines


def _conditions_lines(status: Mapping[str, Any]) -> list[str]:
    conditions = [_map(c) for c in _list(status.get("conditions"))]
    if not conditions:
        return []
    rows = [
        [_text(c.get("type")), _text(c.get("status")), _text(c.get("reason")), c.get("message", "")]
        for c in conditions
    ]
    return ["Conditions:", *table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows)]


def _history_lines(status: Mapping[str, Any]) -> list[str]:
    history = [_map(h) for h in _list(status.get("history"))]
    if not history:
        return []
    rows = [
        [
            _text(h.get("revision")),
            _text(h.get("outcome")),
            _text(h.get("startedAt")),
            _text(h.get("finishedAt")),
            h.get("reason", ""),
        ]
        for h in newest_first(history)
    ]
    header = ["REVISION", "OUTCOME", "STARTED", "FINISHED", "REASON"]
    return ["History (newest first):", *table(header, rows)]


def render_status(obj: Mapping[str, Any]) -> str:
    """The at-a-glance view of one LLMDeployment, as a block of text ending in a newline."""
    status = _map(obj.get("status"))
    sections = [[_header(obj)]]
    if not status:
        sections[0].append("No status yet: is the operator running for this namespace?")
    sections[0] += _control_lines(obj)
    sections += [
        _preflight_lines(status),
        _analysis_lines(obj),
        _conditions_lines(status),
        _history_lines(status),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def _effect(record: Mapping[str, Any], unit: str) -> str:
    """``+12% (-3..+31)``: the effect and its confidence bounds, percent of a latency or
    points of error rate; ``-`` where the check computed none."""
    effect = record.get("effect")
    if effect is None:
        return "-"
    suffix = "%" if unit == "ms" else " pt"
    bounds = ""
    lower, upper = record.get("lower"), record.get("upper")
    if lower is not None and upper is not None:
        bounds = (
            f" ({lower:+.0f}..{upper:+.0f})" if unit == "ms" else f" ({lower:+.2f}..{upper:+.2f})"
        )
    value = f"{effect:+.0f}" if unit == "ms" else f"{effect:+.2f}"
    return f"{value}{suffix}{bounds}"
