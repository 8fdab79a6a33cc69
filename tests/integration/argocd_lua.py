"""Run the Argo CD resource customizations (argocd/resource_customizations) as Argo CD does:
a Lua 5.1 interpreter (lupa's, as Argo CD's gopher-lua implements 5.1) with the live object
as the global ``obj``, the chunk's return value as the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51

CUSTOMIZATIONS = (
    Path(__file__).resolve().parents[2]
    / "argocd"
    / "resource_customizations"
    / "llmcanary.io"
    / "LLMDeployment"
)


def _to_python(value: Any) -> Any:
    if lua51.lua_type(value) != "table":
        return value
    keys = list(value.keys())
    if (
        keys
        and all(isinstance(k, int) for k in keys)
        and sorted(keys) == list(range(1, len(keys) + 1))
    ):
        return [_to_python(value[k]) for k in sorted(keys)]
    return {k: _to_python(value[k]) for k in keys}


def run(script: str, obj: dict[str, Any]) -> Any:
    """``script`` is relative to the LLMDeployment customizations, e.g. ``health.lua``."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    return _to_python(runtime.execute((CUSTOMIZATIONS / script).read_text()))


def health(obj: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = run("health.lua", obj)
    return result


def discovery(obj: dict[str, Any]) -> dict[str, bool]:
    """Action name -> enabled."""
    found: dict[str, dict[str, bool]] = run("actions/discovery.lua", obj)
    return {name: not spec.get("disabled", False) for name, spec in found.items()}


def annotation_patch(before: dict[str, Any], action: str) -> dict[str, Any]:
    """The JSON merge patch Argo CD would send after ``action``: the annotations it changed."""
    after = run(f"actions/{action}/action.lua", before)
    old = before["metadata"].get("annotations") or {}
    new = after["metadata"].get("annotations") or {}
    changed: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    changed.update({k: None for k in old if k not in new})
    return {"metadata": {"annotations": changed}}
