import pytest
from specs import make_spec

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.rollout.revision import revision_of


def test_stable_under_key_order() -> None:
    a = LLMDeploymentSpec.model_validate(
        {"model": {"name": "m", "repository": "/r"}, "resources": {"cpu": "2", "memory": "4Gi"}}
    )
    b = LLMDeploymentSpec.model_validate(
        {"resources": {"memory": "4Gi", "cpu": "2"}, "model": {"repository": "/r", "name": "m"}}
    )
    assert revision_of(a) == revision_of(b)


def test_explicit_default_equals_omitted() -> None:
    a = LLMDeploymentSpec.model_validate({"model": {"name": "m", "repository": "/r"}})
    b = LLMDeploymentSpec.model_validate(
        {"model": {"name": "m", "repository": "/r", "version": "1"}, "triton": {"maxBatchSize": 8}}
    )
    assert revision_of(a) == revision_of(b)


def test_is_ten_hex_characters() -> None:
    rev = revision_of(make_spec())
    assert len(rev) == 10
    int(rev, 16)


@pytest.mark.parametrize(
    "change",
    [
        {"model": {"name": "tiny-llm", "repository": "pvc://models/repo", "version": "2"}},
        {"model": {"name": "other", "repository": "pvc://models/repo"}},
        {"triton": {"image": "nvcr.io/nvidia/tritonserver:24.11-py3"}},
        {"triton": {"maxBatchSize": 16}},
        {"triton": {"maxBatchSize": 8, "instanceGroup": {"kind": "KIND_GPU", "count": 2}}},
        {"triton": {"maxBatchSize": 8, "args": ["--log-verbose=1"]}},
        {"resources": {"gpus": 2}},
        {"resources": {"gpus": 1, "cpu": "8", "memory": "80Gi"}},
        {"env": [{"name": "MODEL_TEMPERATURE", "value": "0.2"}]},
        {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
        {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
    ],
)
def test_changed_by_any_pod_affecting_field(change: dict[str, object]) -> None:
    assert revision_of(make_spec(**change)) != revision_of(make_spec())


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 5},
        {"paused": True},
        {"canary": {"initialWeight": 10, "stepWeight": 20, "stepInterval": "10m"}},
        {
            "canary": {
                "analysis": {
                    "criteria": [{"metric": "ttft", "maxIncreasePercent": 50}],
                    "minSamples": 50,
                }
            }
        },
        {"preflight": {"gpuMemory": {"headroomPercent": 20}}},
        {"preflight": {"dependencies": [{"name": "auth", "url": "http://auth/health"}]}},
        {"traffic": {"router": "replicas"}},
    ],
)
def test_unchanged_by_rollout_tuning(change: dict[str, object]) -> None:
    assert revision_of(make_spec(**change)) == revision_of(make_spec())
