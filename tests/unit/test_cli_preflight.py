"""``llmcanary preflight -f``: what a CI pipeline sees without a cluster."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from llmcanary.cli import main

ROOT = Path(__file__).resolve().parents[2]

SIZED = """
apiVersion: llmcanary.io/v1alpha1
kind: LLMDeployment
metadata: {name: llama, namespace: llm}
spec:
  model:
    name: llama
    repository: /models
    sizing: {parameters: 7.0e9, dtype: fp16, layers: 32, kvHeads: 32, headDim: 128,
             maxSequenceLength: 4096}
  triton: {maxBatchSize: 1}
  preflight:
    dependencies:
      - {name: feature-store, url: "http://features.ml.svc:8080/healthz"}
"""

INVALID = """
apiVersion: llmcanary.io/v1alpha1
kind: LLMDeployment
metadata: {name: broken}
spec:
  model: {name: m, repository: relative/path}
  replicas: -1
  canary: {initialWeight: 50, maxWeight: 20}
"""


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["preflight", *args], input=stdin)
    return result.exit_code, result.output


def test_a_valid_manifest_passes_offline_with_its_estimate() -> None:
    code, out = run("-f", "-", "--offline", stdin=SIZED)
    print(out)
    assert code == 0
    assert "LLMDeployment llm/llama  (offline)" in out
    assert "needs 16.5 GiB per pod (no cluster: fit not checked)" in out
    # 7B fp16: 13.0 GiB of weights; 32 layers x 32 KV heads x 128 x 4096 tokens: 2 GiB.
    assert "weights   13.0 GiB" in out and "KV cache  2.0 GiB" in out
    assert "feature-store  http://features.ml.svc:8080/healthz" in out
    assert out.rstrip().endswith("preflight passed")


def test_every_invalid_field_is_named_and_the_exit_status_is_1() -> None:
    code, out = run("-f", "-", "--offline", stdin=SIZED + "---\n" + INVALID)
    print(out)
    assert code == 1
    assert "schema  FAIL    3 invalid field(s)" in out
    assert "spec.model.repository: String should match pattern" in out
    assert "spec.replicas: Input should be greater than or equal to 1" in out
    assert "initialWeight must not exceed maxWeight" in out
    assert out.rstrip().endswith("preflight failed")


def test_json_output_carries_every_check() -> None:
    code, out = run("-f", "-", "--offline", "-o", "json", stdin=SIZED)
    report = json.loads(out[: out.rindex("]") + 1])
    assert code == 0
    assert [c["check"] for c in report[0]["checks"]] == [
        "schema",
        "model config",
        "gpu memory",
        "env diff",
        "dependencies",
    ]
    assert report[0]["checks"][0]["ok"] is True


def test_a_config_triton_would_refuse_fails_preflight_with_the_field_and_the_fix() -> None:
    doc = yaml.safe_load(SIZED)
    doc["spec"]["resources"] = {"gpus": 0, "cpu": "2", "memory": "8Gi"}
    doc["spec"]["triton"]["instanceGroup"] = {"kind": "KIND_GPU"}
    code, out = run("-f", "-", "--offline", "-o", "json", stdin=yaml.safe_dump(doc))
    report = json.loads(out[: out.rindex("]") + 1])
    assert code == 1
    (found,) = [c for c in report[0]["checks"] if c["check"] == "model config"]
    assert found["ok"] is False
    assert "instance_group.kind: KIND_GPU, but the pods get no GPU" in found["summary"]
    assert "spec.triton.instanceGroup.kind KIND_CPU" in found["summary"]


def test_without_a_kubeconfig_it_says_so_and_runs_the_offline_checks(tmp_path: Path) -> None:
    code, out = run(
        "-f", str(ROOT / "examples" / "tiny-llm.yaml"), "--kubeconfig", str(tmp_path / "none")
    )
    print(out)
    assert code == 0
    assert "(no cluster (no usable kubeconfig" in out
    assert "env diff      -       no cluster: nothing to compare with" in out


def test_unusable_input_is_a_usage_error() -> None:
    assert run("-f", "-", "--offline", stdin="a: [")[0] == 2
    code, out = run("-f", "-", "--offline", stdin="apiVersion: v1\nkind: ConfigMap\n")
    assert code == 2
    assert "no LLMDeployment (llmcanary.io/v1alpha1) in the input" in out


def test_a_local_repository_is_read_and_an_ensembles_steps_are_checked(tmp_path: Path) -> None:
    configs = ROOT / "tests" / "unit" / "model_configs"
    for name, source in (
        ("ensemble", "ensemble"),
        ("preprocessing", None),
        ("tensorrt_llm", "tensorrt_llm"),
        ("postprocessing", None),
    ):
        (tmp_path / name / "1").mkdir(parents=True)
        if source is not None:
            text = (configs / f"{source}.pbtxt").read_text()
            (tmp_path / name / "config.pbtxt").write_text(text)
    doc = yaml.safe_load(SIZED)
    doc["spec"]["model"]["name"] = "ensemble"
    doc["spec"]["triton"] = {}
    manifest = yaml.safe_dump(doc)
    code, out = run("-f", "-", "--offline", "--repository", str(tmp_path), stdin=manifest)
    print(out)
    # What the operator loads from its read of the repository: the ensemble's own config
    # with the spec on it, and the steps, with their own configs.
    assert code == 0
    assert "Triton would load the repository's 4 model(s) as planned" in out
    assert "ensemble        served         its config.pbtxt, the spec overlaid" in out
    assert "tensorrt_llm    ensemble step  its config.pbtxt" in out
    assert "postprocessing  ensemble step  auto-complete" in out
    # A step the repository lacks is named, with the fix.
    (tmp_path / "tensorrt_llm" / "config.pbtxt").unlink()
    (tmp_path / "tensorrt_llm" / "1").rmdir()
    (tmp_path / "tensorrt_llm").rmdir()
    code, out = run("-f", "-", "--offline", "--repository", str(tmp_path), stdin=manifest)
    assert code == 1
    assert (
        "model ensemble: ensemble_scheduling.step: names tensorrt_llm, not in the repository"
    ) in out


def test_a_model_that_declares_nothing_of_its_own_passes_with_its_repository() -> None:
    doc = yaml.safe_load(SIZED)
    doc["spec"]["model"]["name"] = "tiny-llm"
    code, out = run(
        "-f", "-", "--offline", "--repository", str(ROOT / "model_repo"), stdin=yaml.safe_dump(doc)
    )
    print(out)
    assert code == 0
    assert "Triton would load the repository's 1 model(s) as planned" in out
    assert "tiny-llm  served  rendered from the spec" in out
