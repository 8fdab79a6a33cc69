"""``contains``: when a child already has what the builders want (no write, no log line);
``remove``: a child is deleted only if it is the LLMDeployment's, by its UID."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube import FakeKube, Write
from specs import make_spec

from llmcanary.builders.meta import Owner
from llmcanary.builders.workload import build_deployment
from llmcanary.kube.children import Removal, contains, remove


def test_fields_the_api_server_adds_are_not_drift() -> None:
    desired = {"spec": {"ports": [{"port": 80}]}}
    actual = {"spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "protocol": "TCP"}]}}
    assert contains(actual, desired)


@pytest.mark.parametrize("empty", [[], {}, None])
def test_a_field_desired_empty_matches_the_field_the_api_server_dropped(empty: Any) -> None:
    assert contains({"spec": {"containers": [{"name": "c"}]}}, {"spec": {"env": empty}})


@pytest.mark.parametrize(
    ("actual", "desired"),
    [
        ({"env": [{"name": "A", "value": "1"}]}, {"env": []}),  # extra item is drift
        ({}, {"env": [{"name": "A", "value": "1"}]}),  # missing item
        ({"replicas": 1}, {"replicas": 2}),
        ({"args": ["a", "b"]}, {"args": ["b", "a"]}),  # order matters in lists
        ({}, {"replicas": 0}),  # zero is a value, not an empty field
    ],
)
def test_real_differences_are_drift(actual: dict[str, Any], desired: dict[str, Any]) -> None:
    assert not contains(actual, desired)


def _drop_empty(value: Any) -> Any:
    """What the API server stores: empty lists and maps omitted."""
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in ([], {}, None)}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def test_a_deployment_without_env_is_unchanged_once_stored() -> None:
    # The regression: `env: []` made every pass re-apply every Deployment.
    spec = make_spec()
    assert not spec.env
    owner = Owner(namespace="ml", name="tiny", uid="u-1")
    desired = build_deployment(owner, spec, "abc123", "stable", 2)
    assert contains(_drop_empty(desired), desired)


# --- remove: only what is ours ------------------------------------------------------------


def _service(name: str, owner_uid: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ml"}
    if owner_uid is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "llmcanary.io/v1alpha1",
                "kind": "LLMDeployment",
                "name": "tiny",
                "uid": owner_uid,
                "controller": True,
            }
        ]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {}}


def test_remove_deletes_an_owned_child_by_its_uid() -> None:
    kube = FakeKube()
    kube.add(_service("tiny", "0000-uid"))
    uid = kube.objects[("v1", "Service", "ml", "tiny")]["metadata"]["uid"]
    assert remove(kube, "v1", "Service", "ml", "tiny", "0000-uid") is Removal.DELETED
    assert kube.writes == [Write("delete", "Service", "tiny", {"uid": uid})]


@pytest.mark.parametrize("owner_uid", [None, "someone-else"])
def test_remove_leaves_another_owners_object_alone(owner_uid: str | None) -> None:
    kube = FakeKube()
    kube.add(_service("tiny", owner_uid))
    assert remove(kube, "v1", "Service", "ml", "tiny", "0000-uid") is Removal.NOT_OURS
    assert ("v1", "Service", "ml", "tiny") in kube.objects and kube.writes == []


def test_remove_of_nothing_is_gone() -> None:
    assert remove(FakeKube(), "v1", "Service", "ml", "tiny", "0000-uid") is Removal.GONE


class Replaced(FakeKube):
    """The object read is replaced by another of the same name before the delete."""

    def get(self, *args: Any) -> dict[str, Any] | None:
        found = super().get(*args)
        self.objects.pop(("v1", "Service", "ml", "tiny"))
        self.add(_service("tiny", "0000-uid"))  # same name and owner, a new UID
        return found


def test_a_child_replaced_between_read_and_delete_is_not_deleted() -> None:
    kube = Replaced()
    kube.add(_service("tiny", "0000-uid"))
    assert remove(kube, "v1", "Service", "ml", "tiny", "0000-uid") is Removal.GONE
    assert ("v1", "Service", "ml", "tiny") in kube.objects and kube.writes == []
