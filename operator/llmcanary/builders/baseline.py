"""The fresh baseline: a Deployment of the stable revision beside the canary. Pure.

During a rollout the spec describes the canary, so the baseline cannot be built from
it: it is the stable Deployment as the cluster holds it, with the pod template kept
(the same image, model, configuration and resources) and the labels of a revision of its
own (``REVISION-baseline``), so that ``NAME-stable`` does not select its pods.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from llmcanary.builders.meta import (
    LABEL_REVISION,
    LABEL_TRACK,
    Owner,
    baseline_revision,
    deployment_name,
    pod_labels,
    revision_labels,
    revision_selector,
)


def build_baseline(owner: Owner, stable: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """The baseline Deployment for the stable Deployment ``stable``, at ``replicas``."""
    labels = stable.get("metadata", {}).get("labels") or {}
    revision = labels.get(LABEL_REVISION)
    if not revision:
        raise ValueError(f"the stable Deployment has no {LABEL_REVISION} label")
    base = baseline_revision(revision)
    spec = copy.deepcopy(dict(stable.get("spec") or {}))
    template = spec.setdefault("template", {})
    meta = template.setdefault("metadata", {})
    meta["labels"] = {
        **(meta.get("labels") or {}),
        **pod_labels(owner.name, base),
        LABEL_TRACK: "baseline",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(
            deployment_name(owner.name, base), revision_labels(owner.name, base, "baseline")
        ),
        "spec": {
            **{k: v for k, v in spec.items() if k not in ("replicas", "selector", "paused")},
            "replicas": replicas,
            "selector": {"matchLabels": revision_selector(owner.name, base)},
        },
    }
