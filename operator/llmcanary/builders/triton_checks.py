"""What Triton would refuse, or run badly, found before any pod exists. PURE.

Each check reads the configuration Triton will load (the repository's config.pbtxt with
the spec overlaid, :func:`llmcanary.builders.triton_config.overlay`) and says, in one line,
which field is wrong and how to fix it. Admission already refuses what the spec alone
decides (the vllm rules on spec.triton); these catch the same mistakes when they come
from the repository, or from the two together.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from llmcanary.api.spec import LLMDeploymentSpec, TritonSpec
from llmcanary.builders.triton_config import VLLM_BACKEND, overlay
from llmcanary.builders.triton_schema import ModelConfig
from llmcanary.builders.triton_schema.model_config_pb2 import ModelInstanceGroup

__all__ = ["ConfigProblem", "check_model_config", "check_overlay", "spec_config_problems"]

ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class ConfigProblem:
    """One thing Triton would refuse: the model, the field, and what to do."""

    model: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"model {self.model}: {self.field}: {self.message}"


def check_overlay(base: ModelConfig | None, triton: TritonSpec) -> list[ConfigProblem]:
    """Spec fields that cannot go on this repository config at all (the overlay would
    silently throw part of the repository's configuration away)."""
    if base is None:
        return []
    problems = []
    scheduling = base.WhichOneof("scheduling_choice")
    if triton.dynamic_batching is not None and scheduling in (
        "sequence_batching",
        "ensemble_scheduling",
    ):
        problems.append(
            ConfigProblem(
                base.name or "?",
                "spec.triton.dynamicBatching",
                f"the repository's config.pbtxt uses {scheduling}, which excludes"
                " dynamic batching: remove spec.triton.dynamicBatching",
            )
        )
    if triton.instance_group is not None and base.platform == ENSEMBLE:
        problems.append(
            ConfigProblem(
                base.name or "?",
                "spec.triton.instanceGroup",
                "an ensemble has no instances of its own (its steps do):"
                " remove spec.triton.instanceGroup",
            )
        )
    return problems


def check_model_config(
    config: ModelConfig, *, gpus: int, models: Collection[str] | None = None
) -> list[ConfigProblem]:
    """What Triton would refuse in ``config``, for pods with ``gpus`` GPUs each, in a
    repository holding ``models`` (None: not known, ensemble steps not checked)."""
    name = config.name or "?"
    problems: list[ConfigProblem] = []

    def problem(field: str, message: str) -> None:
        problems.append(ConfigProblem(name, field, message))

    batching = config.dynamic_batching if config.HasField("dynamic_batching") else None
    largest = config.max_batch_size
    if config.backend == VLLM_BACKEND:
        if largest > 0:
            problem(
                "max_batch_size",
                f"the vllm backend batches by itself and needs max_batch_size 0 (it is"
                f" {largest}): set spec.triton.maxBatchSize to 0",
            )
        if batching is not None:
            problem(
                "dynamic_batching",
                "the vllm backend batches continuously and refuses dynamic_batching:"
                " remove it from config.pbtxt or from spec.triton.dynamicBatching",
            )
    if batching is not None:
        if largest == 0:
            problem(
                "dynamic_batching",
                "dynamic batching needs max_batch_size > 0: set spec.triton.maxBatchSize"
                " or remove dynamic batching",
            )
        else:
            too_big = [b for b in batching.preferred_batch_size if b > largest or b < 1]
            if too_big:
                problem(
                    "dynamic_batching.preferred_batch_size",
                    f"{too_big} outside 1..max_batch_size ({largest}): lower them"
                    " (spec.triton.dynamicBatching.preferredBatchSizes) or raise"
                    " spec.triton.maxBatchSize",
                )
    if config.platform == ENSEMBLE and config.model_warmup:
        problem(
            "model_warmup",
            "Triton refuses warm-up samples on an ensemble: warm its steps up in their own"
            " config.pbtxt, and take the samples off the ensemble (spec.triton.modelWarmup,"
            " or its config.pbtxt)",
        )
    for sample in config.model_warmup:
        if sample.batch_size > max(largest, 1):
            limit = f"max_batch_size ({largest})" if largest else "1 (max_batch_size is 0)"
            problem(
                "model_warmup.batch_size",
                f"sample {sample.name!r} sends batches of {sample.batch_size}, more than"
                f" {limit}: lower its batch size (spec.triton.modelWarmup, or the model's"
                " config.pbtxt) or raise spec.triton.maxBatchSize",
            )
    if gpus == 0 and any(g.kind == ModelInstanceGroup.KIND_GPU for g in config.instance_group):
        problem(
            "instance_group.kind",
            "KIND_GPU, but the pods get no GPU (spec.resources.gpus is 0): set"
            " spec.resources.gpus, or spec.triton.instanceGroup.kind KIND_CPU",
        )
    if models is not None and config.platform == ENSEMBLE:
        missing = sorted({s.model_name for s in config.ensemble_scheduling.step} - set(models))
        if missing:
            problem(
                "ensemble_scheduling.step",
                f"names {', '.join(missing)}, not in the repository: add"
                f" {'them' if len(missing) > 1 else 'it'} there, or fix the step's model_name",
            )
    return problems


def spec_config_problems(spec: LLMDeploymentSpec) -> list[str]:
    """What Triton would refuse in the configuration the revision's ConfigMap holds, one
    line each. The repository is not read yet, so that configuration is the spec's (and
    the defaults); checked before any pod of the revision exists (the first revision's
    Deployment, a canary's preflight, ``llmcanary preflight``)."""
    config = overlay(None, spec.model, spec.triton)
    return [str(p) for p in check_model_config(config, gpus=spec.resources.gpus)]
