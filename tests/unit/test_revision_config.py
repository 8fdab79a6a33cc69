"""A new revision's configuration: the Job that reads its repository, the ConfigMap made
from the read, the pods' staging of it (the stage script run for real), and what the
reconciler does while the read runs or when it finds the revision wrong."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, cast

from fake_kube import FakeKube
from specs import make_spec
from test_kube_faults import Events, llmdeployment, reconciler
from test_repository import CONFIGS, ensemble_repository, read

from llmcanary.api import ANNOTATION_RETRY
from llmcanary.api.status import LLMDeploymentStatus
from llmcanary.builders import Owner
from llmcanary.builders.meta import config_map_name, deployment_name
from llmcanary.builders.repository import parse_listing, plan_revision, staged_members
from llmcanary.builders.revision_read import (
    JOB_UID,
    LABEL_READ,
    LABEL_READ_REVISION,
    READ_CONTAINER,
    build_read_job,
    read_job_name,
    read_labels,
)
from llmcanary.builders.triton_config import parse_model_config
from llmcanary.builders.workload import STAGE_SCRIPT, build_config_map, build_deployment
from llmcanary.preflight.envdiff import diff_views, view_of
from llmcanary.reconciler.revision_config import read_revision_config
from llmcanary.rollout.revision import revision_of

OWNER = Owner(name="tiny", namespace="ml", uid="0000-uid")
ENSEMBLE = make_spec(
    model={"name": "ensemble", "repository": "pvc://models/llm"},
    triton={"maxBatchSize": 4},
    nodeSelector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
)


def test_the_read_runs_the_revisions_image_where_its_pods_run_with_the_repository_read_only() -> (
    None
):
    job = build_read_job(OWNER, ENSEMBLE, "abc123")
    assert job["metadata"]["name"] == "tiny-read-abc123"
    assert job["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == ENSEMBLE.triton.image
    assert container["env"] == [{"name": "MODEL_REPOSITORY_ROOT", "value": "/mnt/model-source"}]
    assert container["volumeMounts"] == [
        {
            "name": "model-source",
            "mountPath": "/mnt/model-source",
            "readOnly": True,
            "subPath": "llm",
        }
    ]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    # The operator's pod watch maps it to its LLMDeployment; no Service selects it: not
    # the replicas router's (llmcanary.io/deployment), not a track's (llmcanary.io/revision).
    assert labels[LABEL_READ] == "tiny" and labels[LABEL_READ_REVISION] == "abc123"
    assert "llmcanary.io/deployment" not in labels and "llmcanary.io/revision" not in labels
    long = Owner(name="x" * 60, namespace="ml", uid="u")
    assert len(read_job_name(long.name, "abc123")) <= 63


def stage(config_map: dict[str, Any], source: Path, served: str, tmp: Path) -> Path:
    """Run the pods' stage script for real over ``source``, with the ConfigMap's keys as
    files (as the volume mounts them); returns the staged repository."""
    config_dir = tmp / "config"
    config_dir.mkdir()
    for key, value in config_map["data"].items():
        (config_dir / key).write_text(value)
    staged = tmp / "models"
    subprocess.run(
        ["/bin/sh", "-c", STAGE_SCRIPT],
        env={
            "MODEL_NAME": served,
            "MODEL_SOURCE": str(source / served),
            "MODEL_REPOSITORY": str(staged),
            "CONFIG_DIR": str(config_dir),
            "PATH": "/usr/bin:/bin",
        },
        check=True,
        timeout=30,
    )
    return staged


def test_an_ensemble_is_staged_whole_with_the_configs_the_read_planned(tmp_path: Path) -> None:
    source = ensemble_repository(tmp_path / "source")
    plan = plan_revision(ENSEMBLE, parse_listing(read(source)))
    assert plan.problems == ()
    config_map = build_config_map(OWNER, ENSEMBLE, "abc123", plan)
    data = config_map["data"]
    assert sorted(data) == [
        "config.pbtxt",
        "models",
        "preprocessing.config.pbtxt",
        "tensorrt_llm.config.pbtxt",
    ]
    assert data["models"].splitlines() == ["preprocessing", "tensorrt_llm", "postprocessing"]

    staged = stage(config_map, source, "ensemble", tmp_path)
    # Every step, each model's versions linked; not the model no step names.
    assert sorted(p.name for p in staged.iterdir()) == [
        "ensemble",
        "postprocessing",
        "preprocessing",
        "tensorrt_llm",
    ]
    assert (staged / "tensorrt_llm" / "1").resolve() == (source / "tensorrt_llm" / "1").resolve()
    # The served model's config is the repository's with the spec's batch size on it.
    served = parse_model_config((staged / "ensemble" / "config.pbtxt").read_text())
    repository = parse_model_config((CONFIGS / "ensemble.pbtxt").read_text())
    assert served.max_batch_size == 4
    assert served.ensemble_scheduling == repository.ensemble_scheduling
    assert list(served.input) == list(repository.input)
    # A step keeps its own; one without config.pbtxt gets none (Triton completes it).
    step = parse_model_config((staged / "tensorrt_llm" / "config.pbtxt").read_text())
    assert step == parse_model_config((CONFIGS / "tensorrt_llm.pbtxt").read_text())
    assert not (staged / "postprocessing" / "config.pbtxt").exists()


def test_a_configmap_from_before_repositories_were_read_stages_the_served_model(
    tmp_path: Path,
) -> None:
    source = ensemble_repository(tmp_path / "source")
    spec = make_spec(model={"name": "tensorrt_llm", "repository": "/models"})
    legacy = build_config_map(OWNER, spec, "old")  # the spec's rendering, no "models" key
    staged = stage(legacy, source, "tensorrt_llm", tmp_path)
    assert [p.name for p in staged.iterdir()] == ["tensorrt_llm"]
    assert (staged / "tensorrt_llm" / "config.pbtxt").read_text() == legacy["data"]["config.pbtxt"]


def first_revision(kube: FakeKube, spec: Any) -> tuple[Any, str]:
    kube.add(llmdeployment(spec))
    result = reconciler(kube, Events()).reconcile("ml", "tiny")
    return result, revision_of(spec)


def test_the_first_revision_waits_for_the_read_and_says_so() -> None:
    kube = FakeKube(run_reads=False)
    result, revision = first_revision(kube, make_spec())
    assert result is not None and result.phase == "Initializing" and result.problem is None
    status = kube.objects[("llmcanary.io/v1alpha1", "LLMDeployment", "ml", "tiny")]["status"]
    assert status["message"].startswith(
        f"revision {revision}: reading the model repository pvc://models/repo (Job"
        f" tiny-read-{revision}): no pod yet"
    )
    kinds = {w.kind for w in kube.writes if w.verb == "apply"}
    assert "Job" in kinds and "Deployment" not in kinds and "ConfigMap" not in kinds
    # Nothing watched says when the Job ends: the pass looks again soon.
    assert result.wakeup <= 10

    # The pod's end is the read's end, before the Job controller writes the Job's status.
    pod = f"tiny-read-{revision}-abcde"
    job = kube.objects[("batch/v1", "Job", "ml", read_job_name("tiny", revision))]
    labels = {**read_labels("tiny", revision), JOB_UID: job["metadata"]["uid"]}
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": "ml", "labels": labels},
            "status": {"phase": "Succeeded"},
        }
    )
    kube.logs[("ml", pod, READ_CONTAINER, False)] = "llmcanary-repository 1\nmodel tiny-llm\nend\n"
    reconciler(kube, Events()).reconcile("ml", "tiny")
    assert ("v1", "ConfigMap", "ml", config_map_name("tiny", revision)) in kube.objects
    assert ("apps/v1", "Deployment", "ml", deployment_name("tiny", revision)) in kube.objects


def test_the_first_revision_is_made_from_the_read_and_read_once() -> None:
    kube = FakeKube(repository={"tiny-llm": (CONFIGS / "add_sub.pbtxt").read_text()})
    _, revision = first_revision(kube, make_spec())
    config = kube.objects[("v1", "ConfigMap", "ml", config_map_name("tiny", revision))]
    rendered = parse_model_config(config["data"]["config.pbtxt"])
    assert rendered.name == "tiny-llm" and rendered.max_batch_size == 8
    assert [t.name for t in rendered.output] == ["OUTPUT0", "OUTPUT1"]  # the repository's
    assert ("apps/v1", "Deployment", "ml", deployment_name("tiny", revision)) in kube.objects

    reads = kube.log_reads
    jobs = [w for w in kube.writes if w.kind == "Job"]
    reconciler(kube, Events()).reconcile("ml", "tiny")
    assert [w for w in kube.writes if w.kind == "Job"] == jobs  # the ConfigMap stands
    assert reads == kube.log_reads


def test_a_first_revision_whose_model_is_not_in_the_repository_is_refused() -> None:
    kube = FakeKube(repository={"other": None})
    result, revision = first_revision(kube, make_spec())
    assert result is not None and result.problem is not None
    assert result.problem.reason == "InvalidModelConfig"
    assert "no model directory 'tiny-llm' in pvc://models/repo (it holds other)" in (
        result.problem.message
    )
    assert ("apps/v1", "Deployment", "ml", deployment_name("tiny", revision)) not in kube.objects


def test_a_read_that_failed_without_a_listing_says_what_the_job_says() -> None:
    kube = FakeKube(run_reads=False)
    spec = make_spec()
    revision = revision_of(spec)
    kube.add(llmdeployment(spec))
    read_revision_config(kube, OWNER, spec, revision)  # creates the Job
    key = ("batch/v1", "Job", "ml", read_job_name("tiny", revision))
    kube.objects[key]["status"] = {
        "failed": 1,
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
            }
        ],
    }
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "namespace": "ml",
                "labels": {
                    **read_labels("tiny", revision),
                    JOB_UID: kube.objects[key]["metadata"]["uid"],
                },
            },
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": READ_CONTAINER,
                        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no"}},
                    }
                ],
            },
        }
    )
    config = read_revision_config(kube, OWNER, spec, revision)
    assert not config.ready and config.reason == "RepositoryNotRead"
    assert config.problem is not None
    assert "failed: DeadlineExceeded: Job was active longer than specified deadline" in (
        config.problem
    )
    assert "pod Pending (ImagePullBackOff: no)" in config.problem
    # Reported once, then deleted with its pod: the next attempt reads afresh.
    assert key not in kube.objects and ("v1", "Pod", "ml", "p") not in kube.objects
    delete = next(w for w in kube.writes if w.verb == "delete")
    assert delete.kind == "Job"


def test_a_configmap_that_exists_is_taken_as_it_is() -> None:
    kube = FakeKube(run_reads=False)
    spec = make_spec()
    revision = revision_of(spec)
    made = cast(dict[str, Any], build_config_map(OWNER, spec, revision))
    made["metadata"]["ownerReferences"][0]["uid"] = OWNER.uid
    kube.add(made)
    assert read_revision_config(kube, OWNER, spec, revision).ready
    assert kube.writes == []


def test_a_canary_whose_ensemble_names_a_missing_step_fails_preflight_with_the_field() -> None:
    spec = make_spec(model={"name": "ensemble", "repository": "pvc://models/llm"}, triton={})
    stable = LLMDeploymentStatus(phase="Stable", stable_revision="r-stable")
    ensemble = (CONFIGS / "ensemble.pbtxt").read_text()
    kube = FakeKube(repository={"ensemble": ensemble, "preprocessing": None})
    kube.add(llmdeployment(spec, stable))
    deployment = build_deployment(OWNER, spec, "r-stable", "stable", spec.replicas)
    deployment["status"] = {"readyReplicas": 2, "updatedReplicas": 2}
    kube.add(deployment)
    events = Events()
    started = reconciler(kube, events).reconcile("ml", "tiny")
    assert started is not None and started.phase == "Preflight"
    result = reconciler(kube, events).reconcile("ml", "tiny")
    assert result is not None and result.phase == "Failed"
    status = kube.objects[("llmcanary.io/v1alpha1", "LLMDeployment", "ml", "tiny")]["status"]
    assert (
        "model ensemble: ensemble_scheduling.step: names postprocessing, tensorrt_llm, not in"
        in (status["preflight"]["reason"])
    )
    canary = revision_of(spec)
    assert ("apps/v1", "Deployment", "ml", deployment_name("tiny", canary)) not in kube.objects
    assert any(reason == "PreflightFailed" for _, reason, _ in events)


def test_the_environment_diff_compares_every_model_a_revision_loads(tmp_path: Path) -> None:
    """A step's own config is part of the revision: a changed TensorRT-LLM parameter is a
    difference preflight names (``models.NAME.PATH``), allowed only when a pattern says."""
    source = ensemble_repository(tmp_path)
    before = build_config_map(
        OWNER, ENSEMBLE, "r1", plan_revision(ENSEMBLE, parse_listing(read(source)))
    )
    step = source / "tensorrt_llm" / "config.pbtxt"
    step.write_text(step.read_text().replace("inflight_fused_batching", "V1"))
    after = build_config_map(
        OWNER, ENSEMBLE, "r2", plan_revision(ENSEMBLE, parse_listing(read(source)))
    )
    deployment = build_deployment(OWNER, ENSEMBLE, "r", "stable", 1)

    def view(data: dict[str, str]) -> Any:
        return view_of(deployment, data["config.pbtxt"], {}, None, staged_members(data))

    differences = diff_views(view(before["data"]), view(after["data"]), [])
    assert [(d.key, d.stable, d.canary, d.allowed) for d in differences] == [
        (
            "models.tensorrt_llm.parameters.gpt_model_type",
            "inflight_fused_batching",
            "V1",
            False,
        )
    ]
    assert view(before["data"])["models.postprocessing"] == "(no config.pbtxt)"
    allowed = diff_views(view(before["data"]), view(after["data"]), ["models.tensorrt_llm"])
    assert allowed and all(d.allowed for d in allowed)


def test_a_revision_rolled_back_is_not_read_again_until_a_retry() -> None:
    spec = make_spec()
    canary = revision_of(spec)
    rolled_back = LLMDeploymentStatus(
        phase="Failed",
        stable_revision="r-stable",
        canary_revision=canary,
        rolled_back_revision=canary,
    )
    kube = FakeKube(run_reads=False)
    kube.add(llmdeployment(spec, rolled_back))
    deployment = build_deployment(OWNER, spec, "r-stable", "stable", spec.replicas)
    deployment["status"] = {"readyReplicas": 2, "updatedReplicas": 2}
    kube.add(deployment)
    result = reconciler(kube, Events()).reconcile("ml", "tiny")
    assert result is not None and result.phase == "Failed"
    assert [w for w in kube.writes if w.kind in ("Job", "ConfigMap", "Deployment")] == []


def test_a_canary_whose_repository_is_fixed_is_read_afresh_on_retry() -> None:
    """A read that found the revision wrong is deleted once reported: a retry reads the
    repository again, and finds it fixed."""
    spec = make_spec()
    kube = FakeKube(repository={"other": None})
    kube.add(llmdeployment(spec, LLMDeploymentStatus(phase="Stable", stable_revision="r-stable")))
    deployment = build_deployment(OWNER, spec, "r-stable", "stable", spec.replicas)
    deployment["status"] = {"readyReplicas": 2, "updatedReplicas": 2}
    kube.add(deployment)
    for _ in range(2):
        failed = reconciler(kube, Events()).reconcile("ml", "tiny")
    assert failed is not None and failed.phase == "Failed"
    revision = revision_of(spec)
    assert ("v1", "ConfigMap", "ml", config_map_name("tiny", revision)) not in kube.objects

    def reads() -> int:
        return len([w for w in kube.writes if w.kind == "Job" and w.verb == "apply"])

    before = reads()
    for _ in range(2):
        reconciler(kube, Events()).reconcile("ml", "tiny")
    assert reads() == before  # Failed: not read again on its own
    kube.repository = {"tiny-llm": None}  # the model is put in place
    llmd = kube.objects[("llmcanary.io/v1alpha1", "LLMDeployment", "ml", "tiny")]
    llmd["metadata"]["annotations"] = {ANNOTATION_RETRY: "once"}
    for _ in range(2):
        reconciler(kube, Events()).reconcile("ml", "tiny")
    assert ("v1", "ConfigMap", "ml", config_map_name("tiny", revision)) in kube.objects
    assert reads() == before + 1


def test_a_listing_larger_than_the_operator_reads_says_so() -> None:
    """Every model's config is listed: a huge shared repository is refused with the reason,
    not as a listing cut short."""
    big = "# a comment\n" * 70_000  # 840 KB: under the 1 MiB a config may have
    kube = FakeKube(repository={"tiny-llm": None, **{f"m{i}": big for i in range(5)}})
    result, _ = first_revision(kube, make_spec())
    assert result is not None and result.problem is not None
    assert "the repository's listing is larger than the 4 MiB the operator reads" in (
        result.problem.message
    )
