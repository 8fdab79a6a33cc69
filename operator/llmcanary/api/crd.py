"""Generate the ``LLMDeployment`` CRD from the pydantic models.

The models are the single source: this module turns their JSON Schema into the
structural OpenAPI v3 schema Kubernetes wants (inlined references, no ``null``
unions, OpenAPI 3.0 exclusive bounds, defaults for nested objects) and adds the
CRD's envelope: status subresource, printer columns, short names and the CEL rules
on the object's name. ``crds/llmdeployments.yaml`` is this module's output; a unit
test fails when the committed file and the models disagree.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llmcanary.api import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from llmcanary.api.spec import LLMDeploymentSpec, cel
from llmcanary.api.status import LLMDeploymentStatus

# Children are named NAME-canary (a Service: DNS-1035 label, at most 63 characters)
# and NAME-REVISION (10 hex characters), so the LLMDeployment's name is bounded here.
MAX_NAME_LENGTH = 52

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {
        "name": "Check",
        "type": "string",
        "jsonPath": ".status.headline",
        "description": (
            "The last check's first failing criterion (else its first), canary / reference"
        ),
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.currentStep", "priority": 1},
    {
        "name": "FailedChecks",
        "type": "integer",
        "jsonPath": ".status.failedChecks",
        "priority": 1,
    },
    {"name": "Router", "type": "string", "jsonPath": ".spec.traffic.router", "priority": 1},
]

_DROPPED_KEYS = {"title", "additionalProperties"}


def _structural(node: Any, defs: dict[str, Any], keep_defaults: bool) -> Any:
    """Rewrite one pydantic JSON Schema node into a structural OpenAPI v3 node."""
    if isinstance(node, list):
        return [_structural(item, defs, keep_defaults) for item in node]
    if not isinstance(node, dict):
        return node

    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        node = {**target, **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
        return _structural(node, defs, keep_defaults)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        # `X | None`: Kubernetes expresses optional by omission, never by null.
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions other than `X | None` are not structural: {options}")
        merged = {**options[0], **node}
        return _structural(merged, defs, keep_defaults)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "default" and not keep_defaults:
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 bounds -> OpenAPI 3.0 booleans.
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out[key] = {k: _structural(v, defs, keep_defaults) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "anyOf"):
            out[key] = _structural(value, defs, keep_defaults)
        elif key == "description" and isinstance(value, str):
            out[key] = " ".join(value.split())  # field docstrings wrap; kubectl explain rewraps
        else:
            out[key] = value
    return out


def _nested_object_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Give every object field built by ``default_factory`` a default.

    The API server only applies nested defaults below an object that exists, so an
    omitted ``canary:`` needs a default of its own for ``canary.initialWeight`` to be 5.
    """
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        key = field.alias or name
        prop = props.get(key)
        if prop is None:
            continue
        sub = _model_of(field)
        if sub is not None:
            if field.default_factory is not None:
                # The whole default object, not {}: the API server checks a default
                # against the CEL rules before defaulting inside it.
                default = field.default_factory()  # type: ignore[call-arg]
                prop["default"] = default.model_dump(mode="json", by_alias=True, exclude_none=True)
            _nested_object_defaults(sub, prop)
        elif field.default_factory is not None and "default" not in prop:
            value = field.default_factory()  # type: ignore[call-arg]
            if value:  # empty collections stay absent rather than appear on every object
                prop["default"] = value
        item_model = _list_item_model(field)
        if item_model is not None and "items" in prop:
            _nested_object_defaults(item_model, prop["items"])


def _model_of(field: FieldInfo) -> type[BaseModel] | None:
    """The model type of a field typed ``Model`` or ``Model | None``."""
    if getattr(field.annotation, "__origin__", None) in (list, dict):
        return None
    for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _list_item_model(field: FieldInfo) -> type[BaseModel] | None:
    args = getattr(field.annotation, "__args__", ())
    if getattr(field.annotation, "__origin__", None) is list and args:
        item = args[0]
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def openapi_schema(model: type[BaseModel], *, keep_defaults: bool) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model``."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs, keep_defaults)
    if keep_defaults:
        _nested_object_defaults(model, schema)
    schema.pop("description", None) if model is LLMDeploymentStatus else None
    return schema


def build_crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition object."""
    spec_schema = openapi_schema(LLMDeploymentSpec, keep_defaults=True)
    spec_schema["description"] = "What to serve, how to roll it out, and what to check first."
    status_schema = openapi_schema(LLMDeploymentStatus, keep_defaults=False)
    status_schema["description"] = "Written by the operator only; all rollout state lives here."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "llmcanary"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["llmcanary"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "An LLM served by Triton, rolled out as a canary judged on"
                                " latency and errors."
                            ),
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                cel(
                                    f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                                    f"metadata.name must be at most {MAX_NAME_LENGTH} characters:"
                                    " children are named NAME-canary and NAME-REVISION",
                                ),
                                cel(
                                    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                                    "metadata.name must be a DNS-1035 label (lower case letters,"
                                    " digits and '-', starting with a letter): it names Services",
                                ),
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def without_empty_collections(value: Any) -> Any:
    """``value`` less the empty lists and maps the schema leaves out of its defaults.

    Model objects stay even when empty (``{}``), since they carry defaults of their own;
    the map-typed fields (``nodeSelector``, ``parameters``) go. Used to compare what the
    API server stores with what the models produce.
    """
    if isinstance(value, dict):
        return {
            k: without_empty_collections(v)
            for k, v in value.items()
            if v != [] and not (v == {} and k in _MAP_FIELDS)
        }
    return value


_MAP_FIELDS = {"nodeSelector", "parameters"}


def render_crd_yaml() -> str:
    header = (
        "# Generated by `llmcanary crd` from llmcanary.api (the pydantic models).\n"
        "# Do not edit by hand: change the models and run `make crds`.\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


__all__ = [
    "API_VERSION",
    "MAX_NAME_LENGTH",
    "build_crd",
    "openapi_schema",
    "render_crd_yaml",
    "without_empty_collections",
]
