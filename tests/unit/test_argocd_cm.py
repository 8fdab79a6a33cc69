"""argocd/argocd-cm.yaml carries exactly the Lua in argocd/resource_customizations/, which
the integration tests run against the real operator's objects."""

from pathlib import Path

import yaml

ARGOCD = Path(__file__).resolve().parents[2] / "argocd"
LUA = ARGOCD / "resource_customizations" / "llmcanary.io" / "LLMDeployment"


def test_the_argocd_cm_snippet_is_the_tested_lua() -> None:
    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    health = data["resource.customizations.health.llmcanary.io_LLMDeployment"]
    assert health == (LUA / "health.lua").read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.llmcanary.io_LLMDeployment"])
    assert actions["discovery.lua"] == (LUA / "actions" / "discovery.lua").read_text()
    defined = {d["name"]: d["action.lua"] for d in actions["definitions"]}
    on_disk = {p.parent.name: p.read_text() for p in (LUA / "actions").glob("*/action.lua")}
    assert defined == on_disk
    assert set(defined) == {"promote", "abort", "retry", "pause", "resume"}
