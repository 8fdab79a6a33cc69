"""config.pbtxt: the repository's own, read with Triton's schema, the spec overlaid.

Each round trip parses a repository config, overlays a spec, renders, parses the result
again, and compares it with the repository's message changed by hand in exactly the
fields the spec sets: anything else the overlay touched would show up as a difference.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from specs import EVERY_TRITON_FIELD, make_spec

from llmcanary.api.spec import LLMDeploymentSpec, TritonSpec
from llmcanary.builders import Owner
from llmcanary.builders.triton_checks import (
    check_model_config,
    check_overlay,
    spec_config_problems,
)
from llmcanary.builders.triton_config import (
    ModelConfigError,
    flatten_model_config,
    overlay,
    parse_model_config,
    render_config_pbtxt,
)
from llmcanary.builders.triton_schema import ModelConfig
from llmcanary.builders.triton_schema.model_config_pb2 import DataType, ModelInstanceGroup
from llmcanary.builders.workload import build_config_map
from llmcanary.rollout.revision import revision_of

CONFIGS = Path(__file__).parent / "model_configs"
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "operator/llmcanary/builders/triton_schema"


def repository(name: str) -> ModelConfig:
    return parse_model_config((CONFIGS / f"{name}.pbtxt").read_text(), name)


def spec_of(model: str, **triton: Any) -> Any:
    return make_spec(model={"name": model, "repository": "pvc://models/repo"}, triton=triton)


def round_trip(base: ModelConfig, model: str, **triton: Any) -> ModelConfig:
    spec = spec_of(model, **triton)
    text = render_config_pbtxt(spec.model, spec.triton, str(base))
    return parse_model_config(text)


def test_a_python_model_keeps_the_tensors_its_code_reads() -> None:
    base = repository("add_sub")
    got = round_trip(
        base,
        "add_sub",
        maxBatchSize=8,
        dynamicBatching={"maxQueueDelayMicroseconds": 500, "preferredBatchSizes": [4]},
        instanceGroup={"count": 2},
    )
    expected = ModelConfig()
    expected.CopyFrom(base)
    expected.max_batch_size = 8
    expected.dynamic_batching.preferred_batch_size.append(4)
    expected.dynamic_batching.max_queue_delay_microseconds = 500
    expected.instance_group[0].count = 2  # the kind stays KIND_CPU: the spec left it out
    assert got == expected
    assert [o.name for o in got.output] == ["OUTPUT0", "OUTPUT1"]
    assert got.output[0].data_type == base.output[0].data_type


def test_an_ensemble_keeps_its_steps_and_takes_only_the_batch_size() -> None:
    base = repository("ensemble")
    got = round_trip(base, "ensemble", maxBatchSize=32)
    expected = ModelConfig()
    expected.CopyFrom(base)
    expected.max_batch_size = 32
    assert got == expected
    assert got.platform == "ensemble" and not got.backend  # no backend forced on it
    assert not got.instance_group  # an ensemble has none
    assert [s.model_name for s in got.ensemble_scheduling.step] == [
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
    ]


def test_a_bls_model_merges_parameters_by_key() -> None:
    base = repository("bls")
    got = round_trip(
        base, "tensorrt_llm_bls", parameters={"accumulate_tokens": "true", "extra": "1"}
    )
    expected = ModelConfig()
    expected.CopyFrom(base)
    expected.parameters["accumulate_tokens"].string_value = "true"
    expected.parameters["extra"].string_value = "1"
    assert got == expected
    assert got.parameters["tensorrt_llm_model_name"].string_value == "tensorrt_llm"
    assert got.model_transaction_policy.decoupled  # the spec left decoupled unset


def test_a_vllm_model_gets_no_batching_it_must_not_have() -> None:
    base = repository("vllm")
    got = round_trip(base, "llama-vllm", instanceGroup={"count": 2})
    expected = ModelConfig()
    expected.CopyFrom(base)
    expected.name = "llama-vllm"  # the file leaves it out: it is the directory's
    expected.instance_group[0].count = 2
    assert got == expected
    assert not got.HasField("dynamic_batching") and got.max_batch_size == 0
    assert check_model_config(got, gpus=1) == []


def test_a_tensorrt_llm_model_keeps_warmup_cache_policy_and_engine_parameters() -> None:
    base = repository("tensorrt_llm")
    got = round_trip(
        base,
        "tensorrt_llm",
        maxBatchSize=128,
        dynamicBatching={"maxQueueDelayMicroseconds": 200, "preferredBatchSizes": [64, 128]},
        instanceGroup={"kind": "KIND_CPU", "count": 1},
        decoupled=True,
        parameters={"kv_cache_free_gpu_mem_fraction": "0.85"},
    )
    expected = ModelConfig()
    expected.CopyFrom(base)
    expected.max_batch_size = 128
    batching = expected.dynamic_batching
    del batching.preferred_batch_size[:]
    batching.preferred_batch_size.extend([64, 128])
    batching.max_queue_delay_microseconds = 200
    batching.ClearField("default_queue_policy")  # the spec's block has none: it is the spec's
    expected.model_transaction_policy.decoupled = True
    expected.parameters["kv_cache_free_gpu_mem_fraction"].string_value = "0.85"
    assert got == expected
    assert got.model_warmup[0].name == "short prompt" and got.model_warmup[0].count == 2
    assert got.HasField("response_cache") and got.version_policy.latest.num_versions == 1
    assert len(got.parameters) == 7


WARMUP = [
    {
        "name": "one prompt",
        "batchSize": 1,
        "inputs": {
            "PROMPT": {"dataType": "TYPE_STRING", "dims": [1], "zeroData": True},
            "MAX_TOKENS": {"dataType": "TYPE_INT32", "dims": [1], "inputDataFile": "max_tokens"},
        },
        "count": 3,
    }
]


def test_the_specs_warmup_replaces_the_repositorys_and_nothing_else() -> None:
    base = repository("tensorrt_llm")
    got = round_trip(base, "tensorrt_llm", modelWarmup=WARMUP)
    expected = ModelConfig()
    expected.CopyFrom(base)
    del expected.model_warmup[:]
    sample = expected.model_warmup.add(name="one prompt", batch_size=1, count=3)
    sample.inputs["PROMPT"].data_type = DataType.TYPE_STRING
    sample.inputs["PROMPT"].dims.append(1)
    sample.inputs["PROMPT"].zero_data = True
    sample.inputs["MAX_TOKENS"].data_type = DataType.TYPE_INT32
    sample.inputs["MAX_TOKENS"].dims.append(1)
    sample.inputs["MAX_TOKENS"].input_data_file = "max_tokens"
    assert got == expected
    # [] takes the repository's samples away; unset keeps them.
    assert not round_trip(base, "tensorrt_llm", modelWarmup=[]).model_warmup
    assert round_trip(base, "tensorrt_llm").model_warmup == base.model_warmup


def test_a_warmup_batch_larger_than_the_model_takes_is_refused() -> None:
    with pytest.raises(ValueError, match="warm-up batchSize must be at most maxBatchSize"):
        spec_of("m", maxBatchSize=0, modelWarmup=[{**WARMUP[0], "batchSize": 2}])
    for sources in (
        {},
        {"zeroData": True, "randomData": True},
        {"inputDataFile": "f", "zeroData": True},
    ):
        inputs = {"X": {"dataType": "TYPE_FP32", **sources}}
        with pytest.raises(ValueError, match="exactly one of zeroData"):
            spec_of("m", modelWarmup=[{**WARMUP[0], "inputs": inputs}])
    # The repository's max_batch_size with the spec's samples: found before any pod.
    config = overlay(
        repository("vllm"), spec_of("m").model, spec_of("m", modelWarmup=WARMUP).triton
    )
    config.model_warmup[0].batch_size = 4
    (found,) = problems(config)
    assert "model_warmup.batch_size: sample 'one prompt' sends batches of 4, more than 1" in found


def test_warmup_on_an_ensemble_is_refused() -> None:
    config = overlay(
        repository("ensemble"), spec_of("m").model, spec_of("m", modelWarmup=WARMUP).triton
    )
    found = problems(config)
    assert any("model_warmup: Triton refuses warm-up samples on an ensemble" in f for f in found)


def test_an_empty_spec_changes_nothing_but_the_name() -> None:
    for name in ("add_sub", "ensemble", "bls", "vllm", "tensorrt_llm"):
        base = repository(name)
        got = overlay(base, make_spec().model, TritonSpec())
        base.name = "tiny-llm"
        assert got == base, name


def test_overlay_never_changes_the_repository_message() -> None:
    base = repository("tensorrt_llm")
    before = base.SerializeToString(deterministic=True)
    overlay(base, make_spec().model, make_spec().triton)
    assert base.SerializeToString(deterministic=True) == before


def test_without_a_repository_config_the_spec_and_the_defaults() -> None:
    spec = make_spec(triton=EVERY_TRITON_FIELD)
    got = parse_model_config(render_config_pbtxt(spec.model, spec.triton))
    expected = parse_model_config(
        """
        name: "tiny-llm" backend: "python" max_batch_size: 8
        dynamic_batching {
          preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 1500
          default_queue_policy { timeout_action: DELAY max_queue_size: 32 }
        }
        instance_group [ { count: 2 kind: KIND_CPU } ]
        model_transaction_policy { decoupled: true }
        parameters { key: "max_tokens" value: { string_value: "64" } }
        parameters { key: "quote" value: { string_value: "say \\"hi\\"" } }
        model_warmup {
          name: "warm" batch_size: 2 count: 1
          inputs { key: "PROMPT" value { data_type: TYPE_STRING dims: 1 zero_data: true } }
        }
        """
    )
    assert got == expected
    bare = make_spec(triton={})
    assert parse_model_config(render_config_pbtxt(bare.model, bare.triton)) == parse_model_config(
        'name: "tiny-llm" backend: "python" max_batch_size: 8'
        " instance_group [ { count: 1 kind: KIND_GPU } ]"
    )


def test_config_map_holds_the_rendered_config() -> None:
    spec = make_spec()
    owner = Owner(name="tiny", namespace="ns", uid="u")
    cm = build_config_map(owner, spec, "abc123")
    assert cm["data"]["config.pbtxt"] == render_config_pbtxt(spec.model, spec.triton)


def test_a_config_the_schema_cannot_read_says_where() -> None:
    with pytest.raises(ModelConfigError, match=r"m/config.pbtxt: 2:1 : .*max_batch_sise"):
        parse_model_config('name: "m"\nmax_batch_sise: 8\n', "m/config.pbtxt")


def test_the_flat_view_names_fields_by_camel_case_path() -> None:
    flat = flatten_model_config(repository("tensorrt_llm"))
    assert flat["triton.dynamicBatching.preferredBatchSize"] == "[64]"
    assert flat["triton.instanceGroup.kind"] == "KIND_CPU"
    assert flat["triton.parameters.gpt_model_path"] == "/engines/llama-3-8b"
    assert flat["triton.responseCache"] == "{}"  # present, nothing set
    assert flat["triton.input.0.name"] == "input_ids"
    assert flat["triton.modelWarmup.inputs.input_ids.dims"] == "[8]"


# --- what Triton would refuse ----------------------------------------------------------


def problems(config: ModelConfig, **kw: Any) -> list[str]:
    return [str(p) for p in check_model_config(config, **{"gpus": 1, **kw})]


def test_vllm_with_batching_it_must_not_have_is_refused_with_the_fix() -> None:
    config = repository("vllm")
    config.name = "llama"
    config.max_batch_size = 8
    config.dynamic_batching.max_queue_delay_microseconds = 100
    # KIND_GPU is not refused: the vllm backend takes it with one GPU (tensor parallelism 1).
    config.instance_group[0].kind = ModelInstanceGroup.KIND_GPU
    found = problems(config)
    assert len(found) == 2
    assert "model llama: max_batch_size: " in found[0] and "maxBatchSize to 0" in found[0]
    assert "remove it from config.pbtxt or from spec.triton.dynamicBatching" in found[1]


def test_preferred_batch_sizes_above_the_maximum_are_refused() -> None:
    config = repository("tensorrt_llm")
    config.max_batch_size = 32
    (found,) = problems(config)
    assert "dynamic_batching.preferred_batch_size: [64] outside 1..max_batch_size (32)" in found


def test_kind_gpu_without_gpus_is_refused() -> None:
    config = repository("bls")
    config.instance_group[0].kind = ModelInstanceGroup.KIND_GPU
    assert problems(config, gpus=1) == []
    (found,) = problems(config, gpus=0)
    assert "KIND_GPU, but the pods get no GPU (spec.resources.gpus is 0)" in found


def test_an_ensemble_step_naming_a_missing_model_is_refused() -> None:
    config = repository("ensemble")
    assert problems(config, models={"preprocessing", "tensorrt_llm", "postprocessing"}) == []
    (found,) = problems(config, models={"preprocessing", "postprocessing", "ensemble"})
    assert "ensemble_scheduling.step: names tensorrt_llm, not in the repository" in found
    assert problems(config, models=None) == []  # the repository's listing is not known


def test_spec_fields_that_would_discard_the_repository_scheduling_are_refused() -> None:
    ensemble = repository("ensemble")
    spec = spec_of("ensemble", maxBatchSize=8, dynamicBatching={}, instanceGroup={"count": 1})
    found = [str(p) for p in check_overlay(ensemble, spec.triton)]
    assert "uses ensemble_scheduling, which excludes dynamic batching" in found[0]
    assert "an ensemble has no instances of its own" in found[1]
    assert check_overlay(None, spec.triton) == []
    assert check_overlay(repository("add_sub"), spec.triton) == []


# --- revisions and the schema ------------------------------------------------------------


def test_revisions_written_before_the_overlay_keep_their_names() -> None:
    """The API server stored the former defaults in every object; their names (computed by
    the operator before this change) must not move, or an upgrade would roll everything."""
    former_defaults = {
        "backend": "python",
        "maxBatchSize": 8,
        "instanceGroup": {"kind": "KIND_GPU", "count": 1},
        "decoupled": False,
    }
    local = {
        "maxBatchSize": 8,
        "dynamicBatching": {"maxQueueDelayMicroseconds": 2000},
        "instanceGroup": {"kind": "KIND_CPU", "count": 1},
        "decoupled": True,
        "parameters": {"layers": "2"},
    }
    two_gpu = {"backend": "python", "instanceGroup": {"kind": "KIND_GPU", "count": 2}}
    cases: list[tuple[str, dict[str, Any] | None]] = [
        ("c39847bf18", None),
        ("c39847bf18", former_defaults),
        ("062dc6ee1e", local),
        ("c881694c37", {**two_gpu, "maxBatchSize": 16}),
    ]
    for expected, triton in cases:
        doc: dict[str, Any] = {
            "model": {"name": "m", "repository": "/models"},
            "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"},
        }
        if triton is not None:
            doc["triton"] = triton
        assert revision_of(LLMDeploymentSpec.model_validate(doc)) == expected


def test_the_generated_schema_code_is_what_protoc_makes_of_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'operator'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(SCHEMA / "model_config.proto"),
        ],
        check=True,
    )
    made = tmp_path / "llmcanary/builders/triton_schema"
    for name in ("model_config_pb2.py", "model_config_pb2.pyi"):
        assert (made / name).read_text() == (SCHEMA / name).read_text(), (
            f"{name} is stale: run `make protos`"
        )


def test_what_admission_lets_a_spec_leave_out_renders_a_config_triton_takes() -> None:
    vllm = make_spec(triton={"backend": "vllm"}, resources={"gpus": 1})
    rendered = parse_model_config(render_config_pbtxt(vllm.model, vllm.triton))
    assert rendered.max_batch_size == 0
    assert [g.kind for g in rendered.instance_group] == [ModelInstanceGroup.KIND_MODEL]
    assert spec_config_problems(vllm) == []
    # Preferred sizes are checked against the batch size the config gets, 8 when unset.
    big = make_spec(triton={"dynamicBatching": {"preferredBatchSizes": [16]}})
    (found,) = spec_config_problems(big)
    assert "[16] outside 1..max_batch_size (8)" in found
    no_gpu = make_spec(triton={}, resources={"gpus": 0, "cpu": "2", "memory": "8Gi"})
    (found,) = spec_config_problems(no_gpu)
    assert "KIND_GPU, but the pods get no GPU" in found
    cpu = make_spec(triton={"instanceGroup": {"kind": "KIND_CPU"}}, resources={"gpus": 0})
    assert spec_config_problems(cpu) == []
