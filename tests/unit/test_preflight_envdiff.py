"""The environment diff: views of two revisions, the patterns that allow keys, masking."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from specs import EVERY_TRITON_FIELD, make_spec

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.api.status import PreflightStatus
from llmcanary.builders import Owner
from llmcanary.builders.triton_config import render_config_pbtxt
from llmcanary.builders.workload import build_config_map, build_deployment
from llmcanary.kube.errors import Forbidden
from llmcanary.preflight.envdiff import (
    SECRET,
    SECRET_CHANGED,
    Masked,
    RevisionView,
    describe,
    diff_views,
    is_allowed,
    offending,
    parse_config_pbtxt,
    view_of,
)
from llmcanary.preflight.envdiff_source import (
    env_diff,
    environment_diff,
    resolve_env,
    revision_view,
)

DEFAULT_ALLOWED = ["image", "model.version", "env.MODEL_*"]
BATCHING = {"maxQueueDelayMicroseconds": 2000, "preferredBatchSizes": [4, 8]}
OLD_SECRET = "s3cr3t-old-value-4711"
NEW_SECRET = "s3cr3t-new-value-0815"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeKube:
    """The reads :mod:`envdiff_source` makes, from a dict of objects."""

    def __init__(self, *objects: dict[str, Any], forbid: frozenset[str] = frozenset()) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.forbid = forbid
        self.reads: list[tuple[str, str]] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((kind, name))
        if kind in self.forbid:
            raise Forbidden("get", kind, namespace)
        return self.objects.get((kind, name))

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        return [
            o
            for (k, _), o in self.objects.items()
            if k == kind and wanted.items() <= o["metadata"].get("labels", {}).items()
        ]


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: b64(v) for k, v in data.items()},
    }


def config_map(name: str, **data: str) -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def view(
    owner: Owner, spec: LLMDeploymentSpec, kube: FakeKube | None = None, digest: str | None = None
) -> RevisionView:
    deployment = build_deployment(owner, spec, "r", "stable", 1)
    env = resolve_env(kube or FakeKube(), owner.namespace, deployment_env(deployment))
    return view_of(deployment, render_config_pbtxt(spec.model, spec.triton), env, digest)


def deployment_env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def spec_with(**overrides: Any) -> LLMDeploymentSpec:
    base: dict[str, Any] = {"env": [{"name": "MODEL_TEMPERATURE", "value": "0.7"}]}
    return make_spec(**(base | overrides))


def keys(differences: list[Any]) -> dict[str, tuple[str | None, str | None, bool]]:
    return {d.key: (d.stable, d.canary, d.allowed) for d in differences}


# --- the view -------------------------------------------------------------------------------


def test_view_names_every_field_users_can_allow(owner: Owner) -> None:
    spec = spec_with(
        model={"name": "tiny-llm", "repository": "pvc://models/repo", "version": "3"},
        nodeSelector={"nvidia.com/gpu.product": "H100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
        triton={"maxBatchSize": 8, "args": ["--log-verbose=1"], "parameters": {"k": "v"}},
    )
    got = view(owner, spec, digest="sha256:" + "a" * 64)
    assert got["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert got["image.digest"] == "sha256:" + "a" * 64
    assert str(got["args"]).endswith("--exit-on-error=true --log-verbose=1")
    assert got["env.MODEL_TEMPERATURE"] == "0.7"
    assert (got["resources.gpus"], got["resources.cpu"], got["resources.memory"]) == (
        "1",
        "8",
        "64Gi",
    )
    assert (got["model.name"], got["model.version"], got["model.repository"]) == (
        "tiny-llm",
        "3",
        "pvc://models/repo",
    )
    assert got["nodeSelector.nvidia.com/gpu.product"] == "H100"
    assert json.loads(str(got["tolerations"])) == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert got["triton.maxBatchSize"] == "8"
    assert got["triton.instanceGroup.kind"] == "KIND_GPU"
    assert got["triton.instanceGroup.count"] == "1"
    assert got["triton.parameters.k"] == "v"


def test_model_keys_without_annotations_come_from_the_staging_container(owner: Owner) -> None:
    spec = make_spec()
    deployment = build_deployment(owner, spec, "r", "stable", 1)
    del deployment["metadata"]["annotations"]  # written by an operator before they existed
    got = view_of(deployment, None, {}, None)
    assert (got["model.name"], got["model.repository"]) == ("tiny-llm", "pvc://models/repo")
    assert "model.version" not in got
    assert got["triton"] == "(no config.pbtxt)"
    image = make_spec(model={"name": "m", "repository": "/opt/models"})
    deployment = build_deployment(owner, image, "r", "stable", 1)
    del deployment["metadata"]["annotations"]
    assert view_of(deployment, None, {}, None)["model.repository"] == "/opt/models"


def test_config_pbtxt_fields_by_camel_case_path(owner: Owner) -> None:
    spec = make_spec(triton=EVERY_TRITON_FIELD)
    assert parse_config_pbtxt(render_config_pbtxt(spec.model, spec.triton)) == {
        "triton.name": "tiny-llm",
        "triton.backend": "python",
        "triton.maxBatchSize": "8",
        "triton.dynamicBatching.preferredBatchSize": "[4, 8]",
        "triton.dynamicBatching.maxQueueDelayMicroseconds": "1500",
        "triton.dynamicBatching.defaultQueuePolicy.timeoutAction": "DELAY",
        "triton.dynamicBatching.defaultQueuePolicy.maxQueueSize": "32",
        "triton.instanceGroup.count": "2",
        "triton.instanceGroup.kind": "KIND_CPU",
        "triton.modelTransactionPolicy.decoupled": "true",
        "triton.parameters.max_tokens": "64",
        "triton.parameters.quote": 'say "hi"',
        "triton.modelWarmup.name": "warm",
        "triton.modelWarmup.batchSize": "2",
        "triton.modelWarmup.inputs.PROMPT.dataType": "TYPE_STRING",
        "triton.modelWarmup.inputs.PROMPT.dims": "[1]",
        "triton.modelWarmup.inputs.PROMPT.zeroData": "true",
        "triton.modelWarmup.count": "1",
    }


def test_config_pbtxt_repeated_fields_comments_and_several_groups() -> None:
    text = """
    # a comment
    max_batch_size: 4
    instance_group [ { kind: KIND_GPU, gpus: [ 0, 1 ] }, { kind: KIND_CPU count: 2 } ]
    dynamic_batching { preferred_batch_size: 2 preferred_batch_size: 4 }
    optimization < cuda { graphs: true } >
    parameters: { key: "a" value: { string_value: "x" } }
    parameters { key: "b" value: { string_value: "y" } }
    """
    assert parse_config_pbtxt(text) == {
        "triton.maxBatchSize": "4",
        "triton.instanceGroup.0.kind": "KIND_GPU",
        "triton.instanceGroup.0.gpus": "[0, 1]",
        "triton.instanceGroup.1.kind": "KIND_CPU",
        "triton.instanceGroup.1.count": "2",
        "triton.dynamicBatching.preferredBatchSize": "[2, 4]",
        "triton.optimization.cuda.graphs": "true",
        "triton.parameters.a": "x",
        "triton.parameters.b": "y",
    }


@pytest.mark.parametrize(
    "text", ["max_batch_size: ", "dynamic_batching { x: 1", "a: [1 2]", "a: }", "a: @"]
)
def test_unreadable_config_pbtxt_is_a_value_not_a_crash(owner: Owner, text: str) -> None:
    with pytest.raises(ValueError, match=r"config\.pbtxt"):
        parse_config_pbtxt(text)
    deployment = build_deployment(owner, make_spec(), "r", "stable", 1)
    assert str(view_of(deployment, text, {}, None)["triton"]).startswith("(unreadable: ")


# --- the diff -------------------------------------------------------------------------------


def test_identical_revisions_differ_in_nothing(owner: Owner) -> None:
    spec = spec_with()
    assert diff_views(view(owner, spec), view(owner, spec), DEFAULT_ALLOWED) == []


def test_image_change_is_allowed_by_image(owner: Owner) -> None:
    old = view(owner, spec_with(), digest="sha256:" + "1" * 64)
    new = view(
        owner,
        spec_with(
            triton={
                "maxBatchSize": 8,
                "dynamicBatching": BATCHING,
                "image": "nvcr.io/nvidia/tritonserver:24.11-py3",
            }
        ),
        digest="sha256:" + "2" * 64,
    )
    found = keys(diff_views(old, new, DEFAULT_ALLOWED))
    assert found["image"] == (
        "nvcr.io/nvidia/tritonserver:24.10-py3",
        "nvcr.io/nvidia/tritonserver:24.11-py3",
        True,
    )
    # `image` allows the digest under it too.
    assert found["image.digest"][2] is True
    assert found.keys() == {"image", "image.digest"}
    # Without the pattern, both fail.
    assert {d.key for d in offending(diff_views(old, new, []))} >= {"image", "image.digest"}


def test_digest_known_on_one_side_only_is_no_difference(owner: Owner) -> None:
    old = view(owner, spec_with(), digest="sha256:" + "1" * 64)
    assert diff_views(old, view(owner, spec_with()), []) == []


def test_model_env_allowed_and_new_debug_env_not(owner: Owner) -> None:
    old = view(owner, spec_with())
    new = view(
        owner,
        spec_with(
            env=[
                {"name": "MODEL_TEMPERATURE", "value": "0.9"},
                {"name": "DEBUG", "value": "1"},
            ]
        ),
    )
    differences = diff_views(old, new, DEFAULT_ALLOWED)
    assert [d.key for d in differences] == ["env.DEBUG", "env.MODEL_TEMPERATURE"]
    assert keys(differences) == {
        "env.DEBUG": (None, "1", False),
        "env.MODEL_TEMPERATURE": ("0.7", "0.9", True),
    }
    assert [d.key for d in offending(differences)] == ["env.DEBUG"]
    assert describe(offending(differences)) == "env.DEBUG: (none) -> 1"


def test_dynamic_batching_allowed_by_its_pattern(owner: Owner) -> None:
    old = view(owner, spec_with())
    new = view(
        owner,
        spec_with(
            triton={
                "maxBatchSize": 8,
                "dynamicBatching": {"maxQueueDelayMicroseconds": 4000},
            }
        ),
    )
    patterns = [*DEFAULT_ALLOWED, "triton.dynamicBatching.*"]
    found = keys(diff_views(old, new, patterns))
    assert found == {
        "triton.dynamicBatching.maxQueueDelayMicroseconds": ("2000", "4000", True),
        "triton.dynamicBatching.preferredBatchSize": ("[4, 8]", None, True),
    }
    assert not offending(diff_views(old, new, patterns))
    assert len(offending(diff_views(old, new, DEFAULT_ALLOWED))) == 2


def test_more_gpus_are_not_allowed(owner: Owner) -> None:
    old = view(owner, spec_with())
    new = view(owner, spec_with(resources={"gpus": 2, "cpu": "8", "memory": "64Gi"}))
    assert [d.model_dump() for d in diff_views(old, new, DEFAULT_ALLOWED)] == [
        {
            "key": "resources.gpus",
            "stable": "1",
            "canary": "2",
            "allowed": False,
            "masked": False,
        }
    ]
    no_gpu = view(owner, spec_with(resources={"gpus": 0, "cpu": "8", "memory": "64Gi"}))
    assert keys(diff_views(old, no_gpu, []))["resources.gpus"] == ("1", "0", False)


def test_model_version_is_allowed_by_default(owner: Owner) -> None:
    old = view(owner, spec_with())
    new = view(
        owner,
        spec_with(model={"name": "tiny-llm", "repository": "pvc://models/repo", "version": "2"}),
    )
    assert keys(diff_views(old, new, DEFAULT_ALLOWED)) == {"model.version": ("1", "2", True)}


def test_patterns_match_whole_keys_or_parents() -> None:
    assert is_allowed("env.MODEL_TOP_P", ["env.MODEL_*"])
    assert not is_allowed("env.model_top_p", ["env.MODEL_*"])
    assert is_allowed(
        "triton.dynamicBatching.maxQueueDelayMicroseconds", ["triton.dynamicBatching"]
    )
    assert not is_allowed("imagePullPolicy", ["image"])
    assert not is_allowed("env.DEBUG", ["env.MODEL_*", "image"])


def test_long_values_are_cut(owner: Owner) -> None:
    old = view(owner, spec_with())
    new = view(owner, spec_with(env=[{"name": "MODEL_TEMPERATURE", "value": "9" * 1000}]))
    [difference] = diff_views(old, new, DEFAULT_ALLOWED)
    assert difference.canary is not None and len(difference.canary) == 256
    assert difference.canary.endswith("…")


# --- secrets --------------------------------------------------------------------------------


def secret_env(name: str, secret_name: str, key: str = "token") -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def test_changed_secret_is_one_masked_difference_showing_neither_value(
    owner: Owner, caplog: pytest.LogCaptureFixture
) -> None:
    kube = FakeKube(secret("creds-v1", token=OLD_SECRET), secret("creds-v2", token=NEW_SECRET))
    old = view(owner, spec_with(env=[secret_env("API_TOKEN", "creds-v1")]), kube)
    new = view(owner, spec_with(env=[secret_env("API_TOKEN", "creds-v2")]), kube)
    differences = diff_views(old, new, DEFAULT_ALLOWED)
    assert [d.model_dump() for d in differences] == [
        {
            "key": "env.API_TOKEN",
            "stable": SECRET,
            "canary": SECRET_CHANGED,
            "allowed": False,
            "masked": True,
        }
    ]
    status = PreflightStatus(
        revision="r2", passed=False, reason=describe(differences), env_diff=differences
    )
    text = status.model_dump_json(by_alias=True) + repr(status) + repr(old) + repr(new)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("diff %s views %s %s", differences, old, new)
        logging.getLogger("test").info("%s", describe(differences))
    text += caplog.text
    for value in (OLD_SECRET, NEW_SECRET):
        assert value not in text
        assert b64(value) not in text
        assert Masked.of(value.encode())._digest.hex() not in text
    assert "(secret, changed)" in caplog.text


def test_unchanged_secret_is_no_difference_whatever_it_is_called(owner: Owner) -> None:
    kube = FakeKube(secret("creds-v1", token=OLD_SECRET), secret("copy", other=OLD_SECRET))
    old = view(owner, spec_with(env=[secret_env("API_TOKEN", "creds-v1")]), kube)
    new = view(owner, spec_with(env=[secret_env("API_TOKEN", "copy", "other")]), kube)
    assert diff_views(old, new, []) == []
    assert isinstance(old["env.API_TOKEN"], Masked)
    assert repr(old["env.API_TOKEN"]) == "Masked('(secret)')"
    assert f"{old['env.API_TOKEN']}" == SECRET


def test_secret_replacing_a_plain_value_is_masked_on_its_side(owner: Owner) -> None:
    kube = FakeKube(secret("creds", token=NEW_SECRET))
    old = view(owner, spec_with(env=[{"name": "API_TOKEN", "value": "plain"}]), kube)
    new = view(owner, spec_with(env=[secret_env("API_TOKEN", "creds")]), kube)
    assert keys(diff_views(old, new, [])) == {"env.API_TOKEN": ("plain", SECRET, False)}
    [difference] = diff_views(new, old, [])
    assert (difference.stable, difference.canary, difference.masked) == (SECRET, "plain", True)


def test_resolve_env_reads_each_source_once(owner: Owner) -> None:
    kube = FakeKube(
        secret("creds", token=OLD_SECRET, other=NEW_SECRET),
        config_map("settings", temperature="0.7"),
    )
    env = [
        {"name": "PLAIN", "value": "x"},
        {"name": "EMPTY"},
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "other"}}},
        {"name": "C", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}},
        {"name": "D", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}},
        {"name": "T", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "temperature"}}},
        {"name": "U", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nope"}}},
        {"name": "V", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "MEM",
            "valueFrom": {
                "resourceFieldRef": {
                    "resource": "limits.memory",
                    "containerName": "triton",
                    "divisor": "1Mi",
                }
            },
        },
    ]
    got = resolve_env(kube, "ml", env)
    assert got["A"] == Masked.of(OLD_SECRET) and got["B"] == Masked.of(NEW_SECRET)
    assert got["A"] != got["B"]
    assert {k: v for k, v in got.items() if not isinstance(v, Masked)} == {
        "PLAIN": "x",
        "EMPTY": "",
        "C": "(missing secret creds/nope)",
        "D": "(missing secret absent/k)",
        "T": "0.7",
        "U": "(missing configmap settings/nope)",
        "V": "(missing configmap absent/k)",
        "POD": "(fieldRef metadata.name)",
        "MEM": "(resourceFieldRef limits.memory of triton / 1Mi)",
    }
    assert sorted(kube.reads) == [
        ("ConfigMap", "absent"),
        ("ConfigMap", "settings"),
        ("Secret", "absent"),
        ("Secret", "creds"),
    ]
    assert OLD_SECRET not in repr(got) and NEW_SECRET not in repr(got)


def test_unreadable_secrets_say_so(owner: Owner) -> None:
    kube = FakeKube(secret("creds", token=OLD_SECRET), forbid=frozenset({"Secret"}))
    got = resolve_env(kube, "ml", [secret_env("API_TOKEN", "creds")])
    assert got == {
        "API_TOKEN": "(secret creds/token not readable: the operator may not get secrets)"
    }


def test_env_diff_reads_both_revisions_from_the_cluster(
    owner: Owner, caplog: pytest.LogCaptureFixture
) -> None:
    kube = FakeKube(secret("creds-v1", token=OLD_SECRET), secret("creds-v2", token=NEW_SECRET))
    for revision, spec in (
        ("r1", spec_with(env=[secret_env("API_TOKEN", "creds-v1")])),
        ("r2", spec_with(env=[secret_env("API_TOKEN", "creds-v2")])),
    ):
        for obj in (
            build_deployment(owner, spec, revision, "stable", 1),
            build_config_map(owner, spec, revision),
        ):
            kube.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        kube.objects[("Pod", f"pod-{revision}")] = {
            "kind": "Pod",
            "metadata": {
                "name": f"pod-{revision}",
                "labels": {"llmcanary.io/deployment": "tiny", "llmcanary.io/revision": revision},
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "triton",
                        "imageID": f"nvcr.io/nvidia/tritonserver@sha256:{revision[-1] * 64}",
                    }
                ]
            },
        }
    with caplog.at_level(logging.DEBUG, logger="llmcanary"):
        found = keys(env_diff(kube, "ml", "tiny", "r1", "r2", DEFAULT_ALLOWED))
    [record] = [r for r in caplog.records if r.name.startswith("llmcanary")]
    assert record.__dict__["offending"] == ["env.API_TOKEN"]
    assert OLD_SECRET not in repr(record.__dict__) and NEW_SECRET not in repr(record.__dict__)
    assert found == {
        "env.API_TOKEN": (SECRET, SECRET_CHANGED, False),
        "image.digest": ("sha256:" + "1" * 64, "sha256:" + "2" * 64, True),
    }
    # The LLMDeployment's own patterns: without `image`, the digest is an offence too.
    spec = spec_with(preflight={"envDiff": {"allowedDifferences": ["env.*"]}})
    by_spec = keys(environment_diff(kube, owner, spec, "r1", "r2"))
    assert by_spec["env.API_TOKEN"][2] and not by_spec["image.digest"][2]
    with pytest.raises(LookupError, match="tiny-r3"):
        env_diff(kube, "ml", "tiny", "r1", "r3", DEFAULT_ALLOWED)


def test_revision_view_without_its_config_map(owner: Owner) -> None:
    deployment = build_deployment(owner, make_spec(), "r1", "stable", 1)
    got = revision_view(FakeKube(), "ml", deployment, None, [])
    assert got["triton"] == "(no config.pbtxt)" and "image.digest" not in got
