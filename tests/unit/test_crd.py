"""The CRD and the pydantic models agree: one is generated from the other."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llmcanary.api.crd import build_crd, render_crd_yaml, without_empty_collections
from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.preflight.offline import yaml_documents

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "llmdeployments.yaml"


def _schema() -> dict[str, Any]:
    version = build_crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_is_the_generated_one() -> None:
    assert CRD_FILE.read_text() == render_crd_yaml(), "run `make crds` and commit the result"


def _walk_schema(node: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    out = {path: node}
    for key, child in (node.get("properties") or {}).items():
        out.update(_walk_schema(child, f"{path}.{key}"))
    if node.get("items", {}).get("type") == "object":
        out.update(_walk_schema(node["items"], f"{path}[]"))
    values = node.get("additionalProperties")
    if isinstance(values, dict) and values.get("type") == "object":
        out.update(_walk_schema(values, f"{path}{{}}"))
    return out


def _walk_model(model: type[BaseModel], path: str = "") -> set[str]:
    out = {path}
    for name, field in model.model_fields.items():
        key = f"{path}.{field.alias or name}"
        out.add(key)
        out |= _walk_annotation(field.annotation, key)
    return out


def _walk_annotation(annotation: Any, key: str) -> set[str]:
    """The models inside a field's type: ``X``, ``X | None``, ``list[X]``, ``list[X] | None``,
    ``dict[str, X]`` (its values, ``key{}``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _walk_model(annotation, key)
    origin = getattr(annotation, "__origin__", None)
    args = getattr(annotation, "__args__", ())
    if origin is dict:
        return _walk_annotation(args[1], f"{key}{{}}")
    item = f"{key}[]" if origin is list else key
    out: set[str] = set()
    for arg in args:
        out |= _walk_annotation(arg, item)
    return out


@pytest.mark.parametrize(
    ("model", "root"), [(LLMDeploymentSpec, "spec"), (LLMDeploymentStatus, "status")]
)
def test_every_model_field_is_in_the_schema_and_back(model: type[BaseModel], root: str) -> None:
    schema_paths = {
        p.removeprefix(f".{root}") for p in _walk_schema(_schema()) if p.startswith(f".{root}")
    }
    assert _walk_model(model) == schema_paths


def test_schema_defaults_equal_model_defaults() -> None:
    """What the API server fills in for a minimal spec is what pydantic fills in."""

    def apply_defaults(node: dict[str, Any], value: Any) -> Any:
        if node.get("type") == "object" and isinstance(value, dict):
            for key, child in (node.get("properties") or {}).items():
                if key not in value and "default" in child:
                    value[key] = child["default"]
                if key in value:
                    value[key] = apply_defaults(child, value[key])
        return value

    minimal = {"model": {"name": "m", "repository": "/models"}}
    by_server = apply_defaults(_schema()["properties"]["spec"], dict(minimal))
    by_model = LLMDeploymentSpec.model_validate(minimal).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert without_empty_collections(by_server) == without_empty_collections(by_model)


def test_schema_is_structural() -> None:
    """No $ref, no nullable unions, a type on every node except int-or-string."""
    for path, node in _walk_schema(_schema()).items():
        assert "$ref" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert node.get("additionalProperties") is not False, path


def test_printer_columns_answer_where_is_my_rollout() -> None:
    columns = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    default_columns = [c["name"] for c in columns if not c.get("priority")]
    assert default_columns == ["Phase", "Stable", "Canary", "Weight", "Check", "Age"]


def test_examples_validate_against_the_models() -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        for doc in yaml_documents(path.read_text()):
            if doc and doc.get("kind") == "LLMDeployment":
                LLMDeploymentSpec.model_validate(doc["spec"])


# What a structural schema node may hold (apiextensions.k8s.io/v1 JSONSchemaProps).
_SCHEMA_KEYWORDS = {
    "type", "format", "description", "default", "enum", "nullable", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "required", "properties", "items",
    "additionalProperties", "allOf", "anyOf", "oneOf", "not",
    "x-kubernetes-validations", "x-kubernetes-int-or-string", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
}  # fmt: skip


def test_every_schema_keyword_is_one_the_api_server_knows() -> None:
    """A constraint under a name the API server does not know (pydantic's ``ge`` where an
    optional field's bound should be ``minimum``) is not enforced at admission at all,
    and server-side apply of the CRD fails."""

    def unknown(node: Any, path: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        found = [f"{path}.{k}" for k in node if k not in _SCHEMA_KEYWORDS]
        for key in ("properties",):
            for name, child in (node.get(key) or {}).items():
                found += unknown(child, f"{path}.{name}")
        for key in ("items", "additionalProperties", "not"):
            found += unknown(node.get(key), f"{path}.{key}")
        for key in ("allOf", "anyOf", "oneOf"):
            for index, child in enumerate(node.get(key) or []):
                found += unknown(child, f"{path}.{key}[{index}]")
        return found

    assert unknown(_schema(), "") == []
