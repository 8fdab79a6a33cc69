"""The ``LLMDeployment`` spec: the single source of the CRD's spec schema.

Field names are snake_case in Python and camelCase on the wire (aliases). Every
constraint here is rendered into the CRD by :mod:`llmcanary.api.crd`, so the API server
rejects bad input at ``kubectl apply`` with the same rules this model applies.
Cross-field rules are CEL (``x-kubernetes-validations``) and are mirrored by
``model_validator`` methods so offline tools (``llmcanary preflight``) agree with the
server.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from llmcanary.api.types import DurationBetween, Quantity, parse_duration


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL rule for ``x-kubernetes-validations``."""
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


# A list keyed by `name`: the API server rejects duplicate names and merges by name.
LIST_BY_NAME: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}


def _integral(value: object) -> object:
    # JSON has one number type: the API server takes 2.0 for an integer field (and stores
    # 2), so the models do too; 2.5 and "2" stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


INTEGRAL = BeforeValidator(_integral)
Int = Annotated[int, INTEGRAL]

# Bounds on free text: a tenant's object must not grow the operator's status, events or
# memory without limit (the API server caps the whole object at 1.5 MiB, not its parts).
Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\s]+$")]
Word = Annotated[str, Field(max_length=1024)]
# A DNS-1123 subdomain: names of the Secrets and ConfigMaps an env var reads.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


RouterKind = Literal["gatewayAPI", "istio", "replicas", "inferencePool"]
"""The traffic routers (spec.traffic.router); :mod:`llmcanary.routing` has one per kind."""


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        # No coercion ("2" for 2, "yes" for true): the API server refuses those, and the
        # models must agree with it (tests/integration/test_admission_fuzz.py).
        strict=True,
        frozen=True,
        # A docstring under a field is its description in the CRD (kubectl explain).
        use_attribute_docstrings=True,
    )


# --- model -----------------------------------------------------------------------------

Dtype = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]


class ModelSizing(ApiModel):
    """What the GPU memory check needs to know about the model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.layers), has(self.kvHeads), has(self.headDim),"
                    " has(self.maxSequenceLength)].all(x, x) ||"
                    " [has(self.layers), has(self.kvHeads), has(self.headDim),"
                    " has(self.maxSequenceLength)].all(x, !x)",
                    "layers, kvHeads, headDim and maxSequenceLength describe the KV cache"
                    " together: set all four or none",
                )
            ]
        }
    )

    parameters: float = Field(gt=0, le=1e15, description="Number of weights, e.g. 7e9.")
    dtype: Dtype = Field(description="Datatype of the weights and the KV cache.")
    layers: Annotated[int, Field(ge=1, le=1024), INTEGRAL] | None = None
    """Transformer layers (for the KV cache estimate)."""
    kv_heads: Annotated[int, Field(ge=1, le=1024), INTEGRAL] | None = None
    """Key/value attention heads per layer."""
    head_dim: Annotated[int, Field(ge=1, le=4096), INTEGRAL] | None = None
    """Dimension of one attention head."""
    max_sequence_length: Annotated[int, Field(ge=1, le=10_000_000), INTEGRAL] | None = None
    """Longest sequence in tokens; the KV cache is sized for maxBatchSize (at least 1) of them."""

    @model_validator(mode="after")
    def _kv_fields_together(self) -> Self:
        kv = [self.layers, self.kv_heads, self.head_dim, self.max_sequence_length]
        if any(v is None for v in kv) and any(v is not None for v in kv):
            raise ValueError(
                "layers, kvHeads, headDim and maxSequenceLength describe the KV cache"
                " together: set all four or none"
            )
        return self


# No "..": a subPath that climbs out of its claim is refused by the API server anyway.
REPOSITORY_PATTERN = r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^/\s]+)*/?|(/[^/\s]+)+/?)$"
_CLIMBS = r"(^|/)[.][.](/|$)"


LoadedModel = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^(\*|[A-Za-z0-9_][A-Za-z0-9_.-]*)$")
]


class ModelSpec(ApiModel):
    """What is served."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Triton model name (the directory in the model repository).",
    )
    repository: str = Field(
        pattern=REPOSITORY_PATTERN,
        max_length=1024,
        description=(
            "Where the model directory lives: pvc://CLAIM[/SUBPATH] for a PersistentVolumeClaim,"
            " or an absolute path inside the Triton image."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(f"!self.matches('{_CLIMBS}')", "a model repository path has no '..' segment")
            ]
        },
    )
    version: str = Field(
        default="1",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Revision label users bump; part of the revision hash.",
    )
    sizing: ModelSizing | None = None
    """Needed by the GPU memory preflight check; without it that check does not apply."""
    loads: list[LoadedModel] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Other models of the repository to load beside the served one, each with its own"
            " config.pbtxt: the models a BLS model calls at run time. An ensemble's steps are"
            " found in its config and need not be named. '*' loads every model of the"
            " repository."
        ),
    )

    @field_validator("repository")
    @classmethod
    def _repository_stays_inside(cls, repository: str) -> str:
        if re.search(_CLIMBS, repository):
            raise ValueError("a model repository path has no '..' segment")
        return repository


# --- triton ----------------------------------------------------------------------------


class QueuePolicy(ApiModel):
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    """What Triton does with a request that timed out in the queue."""
    default_timeout_microseconds: Int = Field(default=0, ge=0, le=3_600_000_000)
    allow_timeout_override: bool = False
    max_queue_size: Int = Field(default=0, ge=0, le=10_000_000, description="0 means unbounded.")


class DynamicBatching(ApiModel):
    max_queue_delay_microseconds: Int = Field(default=2000, ge=0, le=60_000_000)
    """Longest a request waits in the queue for a batch to fill."""
    preferred_batch_sizes: list[Int] = Field(default_factory=list, max_length=32)
    """Batch sizes Triton prefers to form (each between 1 and maxBatchSize)."""
    preserve_ordering: bool = False
    default_queue_policy: QueuePolicy | None = None

    @model_validator(mode="after")
    def _positive_sizes(self) -> Self:
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise ValueError("preferredBatchSizes must all be at least 1")
        return self


InstanceKind = Literal["KIND_GPU", "KIND_CPU", "KIND_AUTO", "KIND_MODEL"]

#: What the rendered config.pbtxt gets where the spec is silent (the operator does not
#: read a repository's own config.pbtxt yet). These were the CRD's defaults before they
#: became optional: a spec that writes one of them out is the same revision as one that
#: leaves it out (rollout/revision.py).
DEFAULT_BACKEND = "python"
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_INSTANCE_KIND: InstanceKind = "KIND_GPU"
DEFAULT_INSTANCE_COUNT = 1


class InstanceGroup(ApiModel):
    """Model instances; a field left out takes its default (KIND_GPU, 1)."""

    kind: InstanceKind | None = None
    """Where the model instances run (KIND_MODEL: the backend decides, as vLLM's does)."""
    count: Annotated[int, Field(ge=1, le=64), INTEGRAL] | None = None
    """Model instances per pod."""


TensorType = Literal[
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_STRING",
    "TYPE_BF16",
]

_ONE_SOURCE = (
    "[has(self.zeroData) && self.zeroData, has(self.randomData) && self.randomData,"
    " has(self.inputDataFile)].filter(x, x).size() == 1"
)


class WarmupInput(ApiModel):
    """One input tensor of a warm-up request (Triton's `ModelWarmup.Input`): its type,
    its shape without the batch dimension, and its data: exactly one of `zeroData`,
    `randomData` or `inputDataFile`."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(_ONE_SOURCE, "set exactly one of zeroData: true, randomData: true or"
                    " inputDataFile")
            ]
        }
    )  # fmt: skip

    data_type: TensorType
    dims: list[Annotated[int, Field(ge=0, le=1 << 24), INTEGRAL]] = Field(
        default_factory=list, max_length=8
    )
    """The tensor's shape, without the batch dimension; no -1: a request has one shape."""
    zero_data: bool | None = None
    """Zeros (empty strings for TYPE_STRING)."""
    random_data: bool | None = None
    """Random values (zeros for TYPE_STRING)."""
    input_data_file: str | None = Field(
        default=None, max_length=255, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
    )
    """A file in the model's `warmup/` directory of the repository, with the raw data."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = [bool(self.zero_data), bool(self.random_data), self.input_data_file is not None]
        if sum(sources) != 1:
            raise ValueError("set exactly one of zeroData: true, randomData: true or inputDataFile")
        return self


class WarmupSample(ApiModel):
    """A warm-up request Triton sends the model while loading it (`model_warmup`)."""

    name: str = Field(min_length=1, max_length=128)
    batch_size: Int = Field(default=1, ge=1, le=4096)
    """1 for a model without batching (maxBatchSize 0); at most maxBatchSize otherwise."""
    inputs: dict[str, WarmupInput] = Field(min_length=1, max_length=64)
    """By input name, as the model declares its inputs."""
    count: Int = Field(default=1, ge=1, le=1000)
    """How many times the request is sent."""


class TritonSpec(ApiModel):
    """How Triton serves the model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.dynamicBatching) || !has(self.maxBatchSize)"
                    " || self.maxBatchSize > 0",
                    "dynamicBatching needs maxBatchSize > 0",
                    ".maxBatchSize",
                ),
                cel(
                    "!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSizes)"
                    " || self.dynamicBatching.preferredBatchSizes.all(b, b >= 1 &&"
                    " (!has(self.maxBatchSize) || b <= self.maxBatchSize))",
                    "every preferred batch size must be between 1 and maxBatchSize",
                    ".dynamicBatching.preferredBatchSizes",
                ),
                cel(
                    "!has(self.backend) || self.backend != 'vllm'"
                    " || !has(self.maxBatchSize) || self.maxBatchSize == 0",
                    "the vllm backend batches by itself: set maxBatchSize to 0 or leave it out",
                    ".maxBatchSize",
                ),
                cel(
                    "!has(self.modelWarmup) || !has(self.maxBatchSize) || self.modelWarmup.all("
                    "w, !has(w.batchSize) || (self.maxBatchSize == 0 ? w.batchSize == 1"
                    " : w.batchSize <= self.maxBatchSize))",
                    "a warm-up batchSize must be at most maxBatchSize (1 when maxBatchSize is 0)",
                    ".modelWarmup",
                ),
                cel(
                    "!has(self.backend) || self.backend != 'vllm' || !has(self.dynamicBatching)",
                    "the vllm backend batches by itself (continuous batching):"
                    " remove dynamicBatching",
                    ".dynamicBatching",
                ),
            ]
        }
    )

    image: str = Field(
        default="nvcr.io/nvidia/tritonserver:24.10-py3",
        min_length=1,
        max_length=512,
        pattern=r"^[^\s]+$",
    )
    backend: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]+$",
        max_length=64,
        description=(
            "Triton backend of the model (python, vllm, tensorrtllm, onnxruntime, ...)."
            " Unset: python."
        ),
    )
    max_batch_size: Annotated[int, Field(ge=0, le=4096), INTEGRAL] | None = None
    """Largest batch Triton forms; 0: no batching. Unset: 8 (0 for the vllm backend)."""
    dynamic_batching: DynamicBatching | None = None
    """Rendered as config.pbtxt's dynamic_batching; unset: no dynamic batching."""
    instance_group: InstanceGroup | None = None
    """Rendered as config.pbtxt's instance_group; unset: one KIND_GPU instance (KIND_MODEL
    for the vllm backend)."""
    decoupled: bool | None = Field(
        default=None,
        description=(
            "Streaming model: responses sent as tokens are generated. Unset: not decoupled."
        ),
    )
    parameters: dict[str, Word] = Field(
        default_factory=dict,
        max_length=64,
        description="Backend parameters rendered into config.pbtxt.",
    )
    model_warmup: list[WarmupSample] | None = Field(
        default=None,
        max_length=32,
        description=(
            "Requests Triton runs while it loads the model (config.pbtxt's model_warmup):"
            " the model, and so the pod, is ready only once they have run, and the first"
            " users' requests do not pay for a cold model. Set: these samples ([] none)."
        ),
    )
    args: list[Word] = Field(
        default_factory=list, max_length=64, description="Extra tritonserver flags."
    )

    @model_validator(mode="after")
    def _batching_fits(self) -> Self:
        batching, largest = self.dynamic_batching, self.max_batch_size
        if batching is not None and largest is not None:
            if largest == 0:
                raise ValueError("dynamicBatching needs maxBatchSize > 0")
            if any(b > largest for b in batching.preferred_batch_sizes):
                raise ValueError("every preferred batch size must be between 1 and maxBatchSize")
        if largest is not None and any(
            w.batch_size > max(largest, 1) for w in self.model_warmup or ()
        ):
            raise ValueError(
                "a warm-up batchSize must be at most maxBatchSize (1 when maxBatchSize is 0)"
            )
        if self.backend == "vllm":
            if largest:
                raise ValueError(
                    "the vllm backend batches by itself: set maxBatchSize to 0 or leave it out"
                )
            if batching is not None:
                raise ValueError(
                    "the vllm backend batches by itself (continuous batching):"
                    " remove dynamicBatching"
                )
        return self


# --- pod -------------------------------------------------------------------------------


class Resources(ApiModel):
    """Requests equal limits: Triton pods get Guaranteed QoS."""

    gpus: Int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per pod.")
    cpu: Quantity = "4"
    memory: Quantity = "32Gi"


class KeySelector(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    optional: bool | None = None


class ObjectFieldSelector(ApiModel):
    field_path: str = Field(min_length=1, max_length=256)
    api_version: str | None = Field(default=None, max_length=64)


class ResourceFieldSelector(ApiModel):
    resource: str = Field(min_length=1, max_length=64)
    container_name: str | None = Field(default=None, max_length=63)
    divisor: Quantity | None = None


class EnvVarSource(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef),"
                    " has(self.resourceFieldRef)].filter(x, x).size() == 1",
                    "valueFrom takes exactly one of secretKeyRef, configMapKeyRef, fieldRef,"
                    " resourceFieldRef",
                )
            ]
        }
    )

    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = [self.secret_key_ref, self.config_map_key_ref, self.field_ref]
        if sum(x is not None for x in [*chosen, self.resource_field_ref]) != 1:
            raise ValueError(
                "valueFrom takes exactly one of secretKeyRef, configMapKeyRef, fieldRef,"
                " resourceFieldRef"
            )
        return self


class EnvVar(ApiModel):
    """A container environment variable, as in a Kubernetes EnvVar."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.value) && has(self.valueFrom))",
                    "set value or valueFrom, not both",
                )
            ]
        }
    )

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = Field(default=None, max_length=32768)
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self


class Toleration(ApiModel):
    """As in a Pod; the rules the API server applies to a Pod's tolerations are checked here,
    so that a toleration it would refuse is refused at admission, not on the Deployment."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.operator) || self.operator != 'Exists' || !has(self.value)"
                    " || self.value == ''",
                    "a toleration with operator Exists takes no value",
                ),
                cel(
                    "!has(self.tolerationSeconds) || (has(self.effect)"
                    " && self.effect == 'NoExecute')",
                    "tolerationSeconds applies to effect NoExecute only",
                ),
                cel(
                    "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
                    "a toleration without a key needs operator Exists",
                ),
            ]
        }
    )

    key: str | None = Field(
        default=None,
        max_length=316,
        pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    )
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(
        default=None, max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(ge=-(2**53), le=2**53), INTEGRAL] | None = None

    @model_validator(mode="after")
    def _as_a_pod_allows(self) -> Self:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies to effect NoExecute only")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key needs operator Exists")
        return self


# --- traffic ---------------------------------------------------------------------------


class ParentRef(ApiModel):
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, max_length=63)
    section_name: str | None = Field(default=None, max_length=253)
    group: str | None = Field(default=None, max_length=253)
    kind: str | None = Field(default=None, max_length=63)
    port: Annotated[int, Field(ge=1, le=65535), INTEGRAL] | None = None


class GatewayAPITraffic(ApiModel):
    parent_refs: list[ParentRef] = Field(default_factory=list, max_length=32)
    """Gateways the HTTPRoute attaches to."""
    hostnames: list[Host] = Field(default_factory=list, max_length=16)
    """Hostnames of the HTTPRoute."""
    wait_for_gateways: bool = True
    """A step begins only once every Gateway in parentRefs has accepted the route's current
    generation and resolved its backends (its status.parents), and starts over if one stops
    serving it. false: only the weights are read back, for a Gateway controller that writes
    no route status."""


# The endpoint picker the operator runs for each InferencePool: the last release of the
# Gateway API Inference Extension that ships it (v1.6 moved it to llm-d's router).
ENDPOINT_PICKER_IMAGE = "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"
# Flags the operator sets on every picker (routing/inference_pool.py), and those that
# would undo them: its pool, the ports its Service, probes and PodMonitor use, metrics
# without a token and without pprof, one replica without a leader lease, and the pool's
# pods chosen by the pool. A flag and its value may come as "--flag=value" or as two
# arguments: either form is refused.
ENDPOINT_PICKER_FLAGS = (
    r"^--?(pool-name|pool-namespace|pool-group|grpc-port|grpc-health-port|metrics-port"
    r"|model-server-metrics-port|metrics-endpoint-auth|enable-pprof|ha-enable-leader-election"
    r"|endpoint-selector|endpoint-target-ports)(=|$)"
)
OPERATOR_FLAG = (
    "the picker's pool, ports, metrics settings and leader election are set by the operator"
    " (routing/inference_pool.picker_args): remove them from endpointPicker.args"
)


class EndpointPicker(ApiModel):
    """The endpoint picker (EPP) of each InferencePool, which the operator runs: one
    Deployment and Service per pool, since a picker serves the one pool its flags name."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"!has(self.args) || self.args.all(a, !a.matches('{ENDPOINT_PICKER_FLAGS}'))",
                    OPERATOR_FLAG,
                    ".args",
                )
            ]
        }
    )

    image: str = Field(
        default=ENDPOINT_PICKER_IMAGE, min_length=1, max_length=512, pattern=r"^[^\s]+$"
    )
    """The picker's image (the operator's image allowlist applies to it)."""
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=16)
    """Flags added after the operator's (a config file, verbosity, plugins)."""
    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"
    """What the gateway does when the picker does not answer: FailClose refuses the
    request, FailOpen sends it to any pod of the pool."""

    @field_validator("args")
    @classmethod
    def _operator_flags(cls, args: list[str]) -> list[str]:
        if any(re.search(ENDPOINT_PICKER_FLAGS, arg) for arg in args):
            raise ValueError(OPERATOR_FLAG)
        return args


class InferencePoolTraffic(ApiModel):
    parent_refs: list[ParentRef] = Field(min_length=1, max_length=32)
    """The inference Gateways the HTTPRoute attaches to (their implementation routes
    InferencePool backends: Istio, agentgateway, GKE, Envoy AI Gateway, ...)."""
    hostnames: list[Host] = Field(default_factory=list, max_length=16)
    """Hostnames of the HTTPRoute."""
    wait_for_gateways: bool = True
    """A step begins only once every Gateway in parentRefs has accepted the route and
    each weighted pool (their status.parents) and resolved their references, and starts
    over if one stops. false: only the weights and the pickers are checked."""
    endpoint_picker: EndpointPicker = Field(default_factory=EndpointPicker)
    """The picker the operator runs for each pool."""


class IstioTraffic(ApiModel):
    hosts: list[Host] = Field(min_length=1, max_length=16)
    """The VirtualService's hosts."""
    gateways: list[Host] = Field(default_factory=list, max_length=16)
    """The VirtualService's gateways."""


INFERENCE_POOL_NEEDS = "router inferencePool needs traffic.inferencePool.parentRefs (its Gateways)"


class TrafficSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.router != 'istio' || has(self.istio)",
                    "router istio needs traffic.istio.hosts",
                    ".istio",
                ),
                cel(
                    "self.router != 'inferencePool' || has(self.inferencePool)",
                    INFERENCE_POOL_NEEDS,
                    ".inferencePool",
                ),
            ]
        }
    )

    router: RouterKind = "gatewayAPI"
    """gatewayAPI: an HTTPRoute NAME with weights; istio: a VirtualService NAME with
    weights; replicas: one Service NAME over both revisions' Ready pods (the split follows
    pod counts); inferencePool: an InferencePool per track and an HTTPRoute NAME with
    weights on them (the Gateway API Inference Extension)."""
    gateway_api: GatewayAPITraffic = Field(default_factory=GatewayAPITraffic, alias="gatewayAPI")
    """Settings of the HTTPRoute (router gatewayAPI)."""
    istio: IstioTraffic | None = None
    """Settings of the VirtualService (router istio)."""
    inference_pool: InferencePoolTraffic | None = None
    """Settings of the InferencePools and their HTTPRoute (router inferencePool)."""

    @model_validator(mode="after")
    def _router_config(self) -> Self:
        if self.router == "istio" and self.istio is None:
            raise ValueError("router istio needs traffic.istio.hosts")
        if self.router == "inferencePool" and self.inference_pool is None:
            raise ValueError(INFERENCE_POOL_NEEDS)
        return self


# --- canary ----------------------------------------------------------------------------


class PrometheusSource(ApiModel):
    address: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        pattern=r"^https?://[^\s]+$",
        max_length=512,
    )
    """Base URL of the Prometheus HTTP API."""


# What a criterion can judge. The latency signals are distributions (a quantile is
# compared); errorRate is failed / all requests of the arm over the window.
CriterionMetric = Literal["e2eLatency", "ttft", "tpot", "errorRate"]
LATENCY_METRICS: tuple[CriterionMetric, ...] = ("e2eLatency", "ttft", "tpot")
DEFAULT_QUANTILE = 0.95

MetricsPreset = Literal["tritonVLLM", "triton", "istio", "traefik", "endpointPicker"]
# What the canary is compared with (docs/canary.md, "Matched arms").
BaselineMode = Literal["fresh", "stable"]
# With a fresh baseline the canary and the baseline each take the weight, so a matched
# comparison ends at half the traffic: a passing step there promotes.
FRESH_BASELINE_MAX_WEIGHT = 50
# The signals each preset can read (sources/promql.py holds their PromQL); a criterion
# on a signal its preset lacks needs a query template.
PRESET_SIGNALS: dict[MetricsPreset, tuple[CriterionMetric, ...]] = {
    "tritonVLLM": ("e2eLatency", "ttft", "tpot", "errorRate"),
    "triton": ("e2eLatency", "ttft", "errorRate"),
    "istio": ("e2eLatency", "errorRate"),
    "traefik": ("e2eLatency", "errorRate"),
    "endpointPicker": ("e2eLatency", "ttft", "tpot", "errorRate"),
}
# Presets measured in front of the pods, per arm, by the one router whose objects make
# the arms there: the gateway's per-Service series (traefik) need each arm behind its own
# Service of the HTTPRoute; the endpoint picker's series need each arm its own pool.
PRESET_ROUTERS: dict[MetricsPreset, RouterKind] = {
    "traefik": "gatewayAPI",
    "endpointPicker": "inferencePool",
}
PRESET_ROUTER_REASONS: dict[MetricsPreset, str] = {
    "traefik": "the traefik metrics preset reads the gateway's series of each arm's Service:"
    " it needs traffic.router gatewayAPI",
    "endpointPicker": "the endpointPicker metrics preset reads the series of each arm's"
    " InferencePool picker: it needs traffic.router inferencePool",
}


class Criterion(ApiModel):
    """One rule a canary must keep at every check."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.metric != 'errorRate' || (has(self.maxPercent) && !has(self.quantile)"
                    " && !has(self.maxIncreasePercent) && !has(self.maxMilliseconds))",
                    "an errorRate criterion takes maxPercent only",
                ),
                cel(
                    "self.metric == 'errorRate' || (!has(self.maxPercent)"
                    " && (has(self.maxIncreasePercent) || has(self.maxMilliseconds)))",
                    "a latency criterion takes maxIncreasePercent (relative to the reference arm)"
                    " and/or maxMilliseconds (absolute), not maxPercent",
                ),
            ]
        }
    )

    metric: CriterionMetric
    """e2eLatency: request start to last token; ttft: time to first token; tpot: time
    per output token after the first; errorRate: failed / all requests."""
    quantile: float | None = Field(default=None, gt=0, lt=1)
    """The quantile of a latency metric that is compared (default 0.95)."""
    max_increase_percent: float | None = Field(default=None, ge=0, le=10_000)
    """A check fails when the canary's quantile is shown to exceed the reference arm's (the
    fresh baseline, or the stable arm) by more than this."""
    max_milliseconds: float | None = Field(default=None, gt=0, le=3_600_000)
    """A check fails when the canary's quantile is shown to exceed this, whatever the
    reference arm's."""
    max_percent: float | None = Field(default=None, ge=0, le=100)
    """errorRate: a check fails when the canary's error rate is shown to exceed the
    reference arm's by more than this many percentage points."""

    @model_validator(mode="after")
    def _comparison(self) -> Self:
        if self.metric == "errorRate":
            if self.max_percent is None or self.sets_latency_fields():
                raise ValueError("an errorRate criterion takes maxPercent only")
        elif self.max_percent is not None or (
            self.max_increase_percent is None and self.max_milliseconds is None
        ):
            raise ValueError(
                "a latency criterion takes maxIncreasePercent (relative to the reference arm)"
                " and/or maxMilliseconds (absolute), not maxPercent"
            )
        return self

    def sets_latency_fields(self) -> bool:
        return any(
            v is not None for v in (self.quantile, self.max_increase_percent, self.max_milliseconds)
        )

    @property
    def is_latency(self) -> bool:
        return self.metric in LATENCY_METRICS

    @property
    def q(self) -> float:
        """The quantile compared (latency metrics)."""
        return self.quantile if self.quantile is not None else DEFAULT_QUANTILE

    @property
    def label(self) -> str:
        """``ttft p95``, ``errorRate``: how status, events and logs name it."""
        return f"{self.metric} p{self.q * 100:g}" if self.is_latency else self.metric


def default_criteria(preset: MetricsPreset) -> list[Criterion]:
    """The product's rule (P95 end-to-end latency at most +20% over the reference arm, error
    rate at most 1 point above it), plus TTFT and TPOT P95 at most +20% where the preset reads them.
    The triton preset's TTFT needs Triton 2.52+, so it is not a default there."""
    chosen: list[Criterion] = [Criterion(metric="e2eLatency", max_increase_percent=20)]
    if preset == "tritonVLLM":
        chosen += [
            Criterion(metric="ttft", max_increase_percent=20),
            Criterion(metric="tpot", max_increase_percent=20),
        ]
    return [*chosen, Criterion(metric="errorRate", max_percent=1)]


TEMPLATE_VARIABLES = ("arm", "namespace", "name", "revision", "window", "model", "quantile")


def check_template(text: str) -> None:
    """Refuse what ``str.format`` must not be asked to do with a tenant's text: variables
    other than :data:`TEMPLATE_VARIABLES`, and any format spec or conversion (``{arm:>600000000}``
    would allocate 600 MB in the shared operator before a query is even sent)."""
    fields = [
        (field, spec, conversion)
        for _, field, spec, conversion in string.Formatter().parse(text)
        if field is not None
    ]
    shaped = sorted(
        "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        for field, spec, conversion in fields
        if spec or conversion
    )
    if shaped:
        raise ValueError(
            f"template variables take no format spec or conversion: {', '.join(shaped)[:120]};"
            " write the variable alone, e.g. {window}"
        )
    unknown = sorted({field for field, _, _ in fields} - set(TEMPLATE_VARIABLES))
    if unknown:
        raise ValueError(
            f"unknown template variables {[u[:40] for u in unknown[:8]]}; use"
            f" {', '.join(TEMPLATE_VARIABLES)} (write literal braces as {{{{ and }}}})"
        )


# The same rule in CEL: once the literal braces ({{ and }}) and the known variables are
# taken out, no brace may be left (a format spec, a conversion, an unknown name or a lone
# brace all leave one).
_TEMPLATE_CEL = cel(
    "!self.replace('{{', '').replace('}}', '')"
    + "".join(f".replace('{{{v}}}', '')" for v in TEMPLATE_VARIABLES)
    + ".matches('[{}]')",
    "a template uses only the variables "
    + ", ".join("{" + v + "}" for v in TEMPLATE_VARIABLES)
    + ", with no format spec or conversion; write literal braces as {{ and }}",
)
_TEMPLATE_SCHEMA: JsonDict = {"x-kubernetes-validations": [_TEMPLATE_CEL]}


class QueryTemplates(ApiModel):
    """PromQL for signals the preset lacks, or instead of its own. Variables: {arm},
    {namespace}, {name}, {revision}, {window}, {model}, {quantile}."""

    e2e_latency: str | None = Field(
        default=None, max_length=4096, alias="e2eLatency", json_schema_extra=_TEMPLATE_SCHEMA
    )
    """PromQL answering the arm's end-to-end latency at {quantile}, in milliseconds, over
    {window}: it is also read for each time block of the step, {window} then the block."""
    ttft: str | None = Field(default=None, max_length=4096, json_schema_extra=_TEMPLATE_SCHEMA)
    """PromQL answering the arm's time to first token at {quantile}, in milliseconds, over
    {window} (read per time block too, as e2eLatency)."""
    tpot: str | None = Field(default=None, max_length=4096, json_schema_extra=_TEMPLATE_SCHEMA)
    """PromQL answering the arm's time per output token at {quantile}, in milliseconds,
    over {window} (read per time block too, as e2eLatency)."""
    requests: str | None = Field(default=None, max_length=4096, json_schema_extra=_TEMPLATE_SCHEMA)
    """PromQL answering the arm's successful requests over {window}."""
    errors: str | None = Field(default=None, max_length=4096, json_schema_extra=_TEMPLATE_SCHEMA)
    """PromQL answering the arm's failed requests over {window}."""

    @field_validator("e2e_latency", "ttft", "tpot", "requests", "errors")
    @classmethod
    def _template(cls, text: str | None) -> str | None:
        if text is not None:
            check_template(text)
        return text

    def for_metric(self, metric: CriterionMetric) -> str | None:
        return {"e2eLatency": self.e2e_latency, "ttft": self.ttft, "tpot": self.tpot}.get(metric)


# Fields of the analysis before criteria (v1alpha1 broke them on purpose): kept in the
# schema only to be refused with how to write them now.
REMOVED_ANALYSIS_FIELDS = {
    "latency": "analysis.latency was replaced by a list of criteria: write criteria:"
    " [{metric: e2eLatency, quantile: 0.95, maxIncreasePercent: 20}, ...]",
    "errorRate": "analysis.errorRate was replaced by a list of criteria: write criteria:"
    " [..., {metric: errorRate, maxPercent: 1}]",
    "metric": "analysis.metric was replaced by metrics presets: write metrics: triton for"
    " Triton's summary (and its first-response histogram), or tritonVLLM",
}


def _removed(name: str, kind: str) -> JsonDict:
    out: JsonDict = {"description": f"Removed: {REMOVED_ANALYSIS_FIELDS[name]}."}
    if kind == "object":
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _removed_message(name: str) -> str:
    return f"{REMOVED_ANALYSIS_FIELDS[name]} (see docs/canary.md)"


class AnalysisSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *(
                    cel(f"!has(self.{name})", _removed_message(name), f".{name}")
                    for name in REMOVED_ANALYSIS_FIELDS
                ),
                cel(
                    "!has(self.criteria) || self.criteria.all(c, c.metric in "
                    "{'tritonVLLM': ['e2eLatency', 'ttft', 'tpot', 'errorRate'],"
                    " 'triton': ['e2eLatency', 'ttft', 'errorRate'],"
                    " 'istio': ['e2eLatency', 'errorRate']}[self.metrics]"
                    " || (c.metric == 'e2eLatency' && has(self.queries.e2eLatency))"
                    " || (c.metric == 'ttft' && has(self.queries.ttft))"
                    " || (c.metric == 'tpot' && has(self.queries.tpot)))",
                    "a criterion's metric is not read by this metrics preset: choose another"
                    " preset or give its PromQL in analysis.queries",
                    ".criteria",
                ),
            ]
        }
    )

    interval: Annotated[str, DurationBetween("1s", "24h")] = "1m"
    """How often the arms are compared. Each check reads the step so far ({window}: from
    the step's start plus warmup to now), and each latency also in 8 to 16 time blocks of it, none
    shorter than this interval (nor than 60 s for Triton's summary, whose every value covers
    its last minute): keep it at or above Prometheus' scrape interval."""
    prometheus: PrometheusSource = Field(default_factory=PrometheusSource)
    """Where the operator reads the metrics."""
    metrics: MetricsPreset = "tritonVLLM"
    """Which metrics the pods publish (docs/canary.md has each preset's PromQL): tritonVLLM
    (the Triton vLLM backend's TTFT, TPOT and end-to-end histograms), triton (Triton's own
    request summary, and its first-response histogram from 2.52), istio (the mesh's
    request-duration histogram and 5xx), traefik (the Gateway API gateway's per-backend
    request-duration histogram and 5xx, as clients see them; needs the gatewayAPI router),
    endpointPicker (the InferencePool endpoint picker's request-duration, TTFT and TPOT
    histograms and errors, per pool; needs the inferencePool router; TTFT and TPOT only
    where the picker's latency plugin records them)."""
    criteria: list[Criterion] | None = Field(default=None, min_length=1, max_length=16)
    """The rules a check applies, all of them (default: end-to-end latency P95 at most +20%
    over the reference arm, error rate at most 1 point above it, and for tritonVLLM TTFT
    and TPOT P95 at most +20%). The first is the headline kubectl get shows."""
    baseline: BaselineMode | None = None
    """What the canary is compared with. fresh: a baseline Deployment of the stable
    revision, as many replicas as the canary and the same weight, created with it and
    removed after, so both arms have the same per-pod load and age (the default with the
    gatewayAPI and istio routers; weights then stop at 50%). stable: the stable pods, with
    no extra GPUs; a relative verdict is refused while the arms' per-pod load differs by
    more than 25% (the default with the replicas router, which cannot weight a third arm)."""
    warmup: Annotated[str, DurationBetween("0s", "24h")] = "30s"
    """Requests in the first warmup of each step do not count: new pods (the canary's,
    and the baseline's) serve for this long before they are judged."""
    min_samples: Annotated[int, Field(ge=1, le=10_000_000), INTEGRAL] | None = None
    """Requests each arm needs in a step before it is judged (default: enough for 10
    beyond the highest quantile judged, 200 for a P95). The sequential tests decide how
    many more they need."""
    failure_limit: Int = Field(default=1, ge=1, le=100)
    """Failed checks in one rollout that roll the canary back."""
    inconclusive_limit: Int = Field(default=5, ge=1, le=1000)
    """Inconclusive checks in a row that pause the rollout."""
    queries: QueryTemplates = Field(default_factory=QueryTemplates)
    """Your own PromQL instead of (or besides) the preset's."""
    latency: dict[str, object] | None = Field(
        default=None, json_schema_extra=_removed("latency", "object")
    )
    error_rate: dict[str, object] | None = Field(
        default=None, json_schema_extra=_removed("errorRate", "object")
    )
    metric: str | None = Field(default=None, json_schema_extra=_removed("metric", "string"))

    @model_validator(mode="after")
    def _criteria(self) -> Self:
        for name, value in (
            ("latency", self.latency),
            ("errorRate", self.error_rate),
            ("metric", self.metric),
        ):
            if value is not None:
                raise ValueError(_removed_message(name))
        readable = PRESET_SIGNALS[self.metrics]
        for criterion in self.criteria or ():
            metric = criterion.metric
            if metric not in readable and self.queries.for_metric(metric) is None:
                raise ValueError(
                    f"criterion {metric}: the {self.metrics} metrics preset does not read it:"
                    f" choose another preset or give its PromQL in analysis.queries.{metric}"
                )
        return self

    @property
    def rules(self) -> list[Criterion]:
        """The criteria a check applies: the spec's, else the preset's defaults."""
        return list(self.criteria) if self.criteria else default_criteria(self.metrics)


class CanarySpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.initialWeight <= self.maxWeight",
                    "initialWeight must not exceed maxWeight",
                    ".initialWeight",
                ),
                cel(
                    "duration(self.stepInterval) >= duration(self.analysis.interval)",
                    "stepInterval must be at least analysis.interval: every step is judged",
                    ".stepInterval",
                ),
                cel(
                    "duration(self.analysis.interval) > duration('0s')",
                    "analysis.interval must be positive",
                    ".analysis.interval",
                ),
                cel(
                    "duration(self.analysis.warmup) < duration(self.initialStepInterval)"
                    " && duration(self.analysis.warmup) < duration(self.stepInterval)",
                    "analysis.warmup must be shorter than every step, or no request counts",
                    ".analysis.warmup",
                ),
            ]
        }
    )

    initial_weight: Int = Field(default=5, ge=1, le=100)
    """Percent of the traffic at the first step."""
    step_weight: Int = Field(default=10, ge=1, le=100)
    """Percent added at each later step."""
    max_weight: Int = Field(default=100, ge=1, le=100)
    """Weights are capped here; a passing step at this weight promotes the canary."""
    initial_step_interval: Annotated[str, DurationBetween("1s", "720h")] = "15m"
    """Shortest duration of the first step."""
    step_interval: Annotated[str, DurationBetween("1s", "720h")] = "30m"
    """Shortest duration of each later step; a step also needs a passing check."""
    ready_deadline: Annotated[str, DurationBetween("1m", "24h")] = "45m"
    """How long the canary (and its baseline) may lack the Ready replicas the rollout waits
    for: for its next weight while its pods are created, pull the image and load the
    model; for the weight it had, after losing pods (that weight goes to the stable pods at
    once); for promotion. Past it the rollout fails and rolls back, with the Deployment's
    reason (a ResourceQuota, Pod Security) when it gives one. Not counted while paused by
    hand."""
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    """How each step is judged."""

    @model_validator(mode="after")
    def _weights_and_intervals(self) -> Self:
        if self.initial_weight > self.max_weight:
            raise ValueError("initialWeight must not exceed maxWeight")
        interval = parse_duration(self.analysis.interval)
        if interval.total_seconds() <= 0:
            raise ValueError("analysis.interval must be positive")
        if parse_duration(self.step_interval) < interval:
            raise ValueError(
                "stepInterval must be at least analysis.interval: every step is judged"
            )
        warmup = parse_duration(self.analysis.warmup)
        shortest = min(
            parse_duration(self.initial_step_interval), parse_duration(self.step_interval)
        )
        if warmup >= shortest:
            raise ValueError(
                "analysis.warmup must be shorter than every step, or no request counts"
            )
        return self


# --- preflight -------------------------------------------------------------------------


class EnvDiffCheck(ApiModel):
    allowed_differences: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=lambda: ["image", "model.version", "env.MODEL_*"], max_length=64
    )
    """Keys (fnmatch patterns) stable and canary may differ in; any other difference
    fails preflight."""


class GpuProbe(ApiModel):
    enabled: bool = False
    """Run a Job on a GPU node to measure its free GPU memory."""
    image: str | None = Field(default=None, max_length=512)
    """The probe Job's image, with python and torch (default: the operator's
    LLMCANARY_GPU_PROBE_IMAGE)."""


class GpuMemoryCheck(ApiModel):
    enabled: bool = True
    """Check that weights, KV cache and headroom fit the GPUs (needs model.sizing)."""
    headroom_percent: float = Field(default=10, ge=0, le=100)
    """Added on top of weights and KV cache."""
    probe: GpuProbe = Field(default_factory=GpuProbe)
    """The opt-in measurement of free GPU memory."""


class Dependency(ApiModel):
    name: str = Field(min_length=1, max_length=63)
    """Names the dependency in status and messages."""
    url: str = Field(
        pattern=r"^(https?://[^\s]+|tcp://[^\s/]+:[0-9]+)$",
        max_length=1024,
        description="http(s)://... or tcp://host:port",
    )
    timeout_milliseconds: Int = Field(default=1000, ge=1, le=60_000)
    """Longest wait for the dependency."""
    expect_status: Int = Field(default=200, ge=100, le=599)
    """HTTP status that counts as healthy (http and https only)."""


class PreflightSpec(ApiModel):
    env_diff: EnvDiffCheck = Field(default_factory=EnvDiffCheck)
    """Compare the canary's environment with the stable's."""
    gpu_memory: GpuMemoryCheck = Field(default_factory=GpuMemoryCheck)
    """Check that the model fits the GPUs its pods can land on."""
    dependencies: list[Dependency] = Field(
        default_factory=list, max_length=32, json_schema_extra=LIST_BY_NAME
    )


# --- the spec --------------------------------------------------------------------------


def _router_is(router: RouterKind) -> str:
    """CEL: the spec's router is ``router`` (the default one when traffic is unset)."""
    if router == "gatewayAPI":
        return (
            "!has(self.traffic) || !has(self.traffic.router) || self.traffic.router == 'gatewayAPI'"
        )
    return f"has(self.traffic) && has(self.traffic.router) && self.traffic.router == '{router}'"


class LLMDeploymentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.canary) || !has(self.canary.analysis)"
                    " || !has(self.canary.analysis.baseline)"
                    " || self.canary.analysis.baseline != 'fresh'"
                    " || !has(self.traffic) || self.traffic.router != 'replicas'",
                    "the replicas router cannot give a baseline its own weight: use"
                    " baseline: stable, or a router that weights a third arm"
                    " (gatewayAPI, istio, inferencePool)",
                    ".canary.analysis.baseline",
                ),
                *(
                    cel(
                        "!has(self.canary) || !has(self.canary.analysis)"
                        " || !has(self.canary.analysis.metrics)"
                        f" || self.canary.analysis.metrics != '{preset}'"
                        f" || {_router_is(router)}",
                        PRESET_ROUTER_REASONS[preset],
                        ".canary.analysis.metrics",
                    )
                    for preset, router in PRESET_ROUTERS.items()
                ),
            ]
        }
    )

    model: ModelSpec
    triton: TritonSpec = Field(default_factory=TritonSpec)
    replicas: Int = Field(default=1, ge=1, le=1000)
    """Triton pods of the stable revision; a canary grows to this many before it is
    promoted. Not part of the revision."""
    resources: Resources = Field(default_factory=Resources)
    env: list[EnvVar] = Field(default_factory=list, max_length=256, json_schema_extra=LIST_BY_NAME)
    """Environment of the Triton container."""
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=64
    )
    """Node labels the Triton pods need; the GPU memory check considers only nodes that match."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Tolerations of the Triton pods."""
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    """How traffic is split between the stable and the canary revision."""
    canary: CanarySpec = Field(default_factory=CanarySpec)
    """The rollout: steps, intervals and the analysis that judges each step."""
    preflight: PreflightSpec = Field(default_factory=PreflightSpec)
    """Checks a new revision must pass before it gets any traffic."""
    paused: bool = False
    """Hold any rollout where it is (no weight change, no checks) while true."""

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        for what, names in (
            ("env", [e.name for e in self.env]),
            ("preflight.dependencies", [d.name for d in self.preflight.dependencies]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what}: duplicate names {dupes}")
        return self

    @model_validator(mode="after")
    def _baseline_needs_weights(self) -> Self:
        if self.canary.analysis.baseline == "fresh" and self.traffic.router == "replicas":
            raise ValueError(
                "canary.analysis.baseline: the replicas router cannot give a baseline its"
                " own weight: use baseline: stable, or a router that weights a third arm"
                " (gatewayAPI, istio, inferencePool)"
            )
        return self

    @model_validator(mode="after")
    def _preset_needs_its_router(self) -> Self:
        preset = self.canary.analysis.metrics
        router = PRESET_ROUTERS.get(preset)
        if router is not None and self.traffic.router != router:
            raise ValueError(f"canary.analysis.metrics: {PRESET_ROUTER_REASONS[preset]}")
        return self

    @property
    def baseline(self) -> BaselineMode:
        """The reference arm in effect: the spec's choice, else fresh wherever the router
        can weight a third arm."""
        chosen = self.canary.analysis.baseline
        if chosen is not None:
            return chosen
        return "stable" if self.traffic.router == "replicas" else "fresh"

    @property
    def top_weight(self) -> int:
        """The highest weight the rollout plans (maxWeight, at most 50% with a fresh
        baseline); a passing step there promotes."""
        if self.baseline == "fresh":
            return min(self.canary.max_weight, FRESH_BASELINE_MAX_WEIGHT)
        return self.canary.max_weight

    def planned_weights(self) -> list[Int]:
        """Every step's weight, in order."""
        canary, top = self.canary, self.top_weight
        weights = [min(canary.initial_weight, top)]
        while weights[-1] < top:
            weights.append(min(weights[-1] + canary.step_weight, top))
        return weights


# Fields that change what runs in the pod: any change here is a new revision.
POD_AFFECTING_FIELDS: tuple[str, ...] = (
    "model",
    "triton",
    "resources",
    "env",
    "node_selector",
    "tolerations",
)


def describe_errors(error: ValidationError, root: str = "spec") -> str:
    """Validation errors as ``spec.a.b: message`` lines, in the wire's field names."""
    return "; ".join(
        ".".join(str(p) for p in (root, *item["loc"])) + f": {item['msg']}"
        for item in error.errors(include_url=False)
    )
