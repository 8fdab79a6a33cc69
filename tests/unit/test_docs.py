"""The docs stay true to the code: the generated reference, settings, flags, queries, links."""

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from llmcanary.api.crd import PRINTER_COLUMNS, build_crd
from llmcanary.api.reference import REFERENCE_PATH, render_reference
from llmcanary.api.spec import AnalysisSpec
from llmcanary.cli.run import run
from llmcanary.config import OperatorConfig
from llmcanary.sources.base import Scope
from llmcanary.sources.promql import PRESETS, HistogramQuery, arm_queries

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
OPERATIONS = DOCS / "operations.md"
CANARY = DOCS / "canary.md"


def _root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_reference_is_the_generated_one() -> None:
    committed = (ROOT / REFERENCE_PATH).read_text()
    assert committed == render_reference(), (
        f"{REFERENCE_PATH} is stale: run `make docs`"
        f" (or `llmcanary crd --reference > {REFERENCE_PATH}`) and commit the result"
    )


def test_reference_is_deterministic() -> None:
    assert render_reference() == render_reference()


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        out += _walk(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    return out


def test_reference_names_every_field_rule_and_column() -> None:
    text = render_reference()
    nodes = _walk(_root_schema(), "")
    for path, node in nodes:
        if not path:
            continue
        key = path.rpartition(".")[2]
        if key.endswith("[]"):
            continue  # an array's items: its fields are listed in their own section
        assert f"| `{key}` |" in text, f"field {path} is missing from the reference"
        if node.get("type") == "object" and "properties" in node:
            assert f"\n## {path}\n" in text or f"\n### {path}\n" in text, path
        if isinstance(node.get("items"), dict) and "properties" in node["items"]:
            assert f"\n### {path}[]\n" in text, path
    for _, node in nodes:
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] in text, f"CEL rule {rule['rule']!r} is missing"
    for column in PRINTER_COLUMNS:
        assert f"`{column['jsonPath']}`" in text, column["name"]


def test_reference_links_resolve_to_its_headings() -> None:
    text = render_reference()
    headings = {
        re.sub(r"[^a-z0-9_-]", "", h.lower().replace(" ", "-"))
        for h in re.findall(r"^#+ (.+)$", text, flags=re.M)
    }
    anchors = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert anchors, "the reference links its sections"
    assert anchors <= headings, sorted(anchors - headings)


def test_operations_lists_every_operator_setting() -> None:
    text = OPERATIONS.read_text()
    for name in OperatorConfig.model_fields:
        variable = f"LLMCANARY_{name.upper()}"
        assert f"`{variable}`" in text, f"{variable} (config.py) is not in docs/operations.md"


def test_operations_lists_every_run_flag() -> None:
    text = OPERATIONS.read_text()
    for param in run.params:
        for flag in param.opts:
            assert f"`{flag}" in text, f"`llmcanary run {flag}` is not in docs/operations.md"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_canary_docs_show_the_queries_each_preset_runs(preset: str) -> None:
    """docs/canary.md renders each preset's PromQL for these placeholders."""
    scope = Scope("NAMESPACE", "NAME", "MODEL", "canary", "CANARYREV", timedelta(minutes=1))
    queries = arm_queries(AnalysisSpec(metrics=preset), scope)  # type: ignore[arg-type]
    shown = [queries.requests, queries.errors]
    for query in queries.latency.values():
        if isinstance(query, HistogramQuery):
            shown.append(query.promql(queries.values))
        else:
            shown.append(query.promql(queries.values, 0.95))
    text = CANARY.read_text()
    for query in shown:
        assert query in text, f"docs/canary.md lacks the {preset} query the code runs:\n{query}"


def _markdown_files() -> list[Path]:
    return sorted([ROOT / "README.md", *DOCS.rglob("*.md")])


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"``.*?``|`[^`\n]*`", "", text)  # code spans: patterns are not links
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#", 1)[0]).resolve()
        if not file.exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files {broken}"


def test_docs_index_lists_every_doc() -> None:
    index = (DOCS / "README.md").read_text()
    docs = [p for p in DOCS.rglob("*.md") if p.name != "README.md"]
    missing = [str(p.relative_to(DOCS)) for p in docs if f"({p.relative_to(DOCS)})" not in index]
    assert not missing, f"docs/README.md does not link {missing}"
