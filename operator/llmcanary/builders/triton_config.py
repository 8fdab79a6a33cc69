"""Triton's ``config.pbtxt``: the repository's own, with the spec's fields overlaid.

PURE. A model's configuration is Triton's ``ModelConfig`` message in protobuf text format.
It is read and written with Triton's schema (:mod:`llmcanary.builders.triton_schema`),
never by hand, so every field Triton knows survives the round trip: inputs and outputs,
an ensemble's steps, sequence batching, the response cache, ``model_warmup``, version
and rate-limiter policies, optimization settings.

:func:`overlay` changes only what ``spec.triton`` sets:

=====================  ================================================================
``name``               always the directory's name, ``spec.model.name``
``backend``            when set (a config naming a ``platform`` keeps it)
``max_batch_size``     when set
``dynamic_batching``   when set: its preferred sizes, queue delay, ordering and default
                       queue policy; the repository's priority levels stay
``instance_group``     ``kind`` and ``count`` when set, on every group (or one new group)
``decoupled``          ``model_transaction_policy.decoupled``, when set
``parameters``         merged by key: the spec's keys win, the others stay
``model_warmup``       when set: the spec's samples replace the repository's (``[]``: none)
=====================  ================================================================

A model whose repository has no ``config.pbtxt`` gets one with the spec's fields and the
defaults of :mod:`llmcanary.api.spec` (``DEFAULT_*``; for the vllm backend no batch
dimension and a ``KIND_MODEL`` instance); inputs and outputs are left to the backend's
auto-complete, as Triton does for a missing config.

Not wired yet: the operator does not read a repository's ``config.pbtxt`` (it cannot see
a PVC or a path inside the Triton image; a read before any pod exists is the open part of
issue 16), so the ConfigMap holds ``overlay(None, ...)``, which replaces the repository's
file. The overlay of a repository config and :func:`~llmcanary.builders.triton_checks.
check_overlay` are exercised by the unit tests only, until then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from llmcanary.api.spec import (
    DEFAULT_BACKEND,
    DEFAULT_INSTANCE_COUNT,
    DEFAULT_INSTANCE_KIND,
    DEFAULT_MAX_BATCH_SIZE,
    DynamicBatching,
    ModelSpec,
    TritonSpec,
    WarmupSample,
)
from llmcanary.builders.triton_schema import ModelConfig
from llmcanary.builders.triton_schema.model_config_pb2 import (
    DataType,
    ModelInstanceGroup,
    ModelQueuePolicy,
)

__all__ = [
    "ModelConfigError",
    "flatten_model_config",
    "overlay",
    "parse_model_config",
    "render_config_pbtxt",
    "render_model_config",
]


Kind = ModelInstanceGroup.Kind
VLLM_BACKEND = "vllm"


class ModelConfigError(ValueError):
    """A config.pbtxt Triton's schema cannot read; the message says where and why."""


def parse_model_config(text: str, where: str = "config.pbtxt") -> ModelConfig:
    """``text`` as a :class:`ModelConfig`. Raises :class:`ModelConfigError`.

    Unknown fields are an error, as they are to Triton: a config this schema cannot read
    is one Triton would refuse too (or one written for a newer Triton than the schema).
    """
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ModelConfigError(f"{where}: {error}") from None
    return config


def render_model_config(config: ModelConfig) -> str:
    """``config`` in protobuf text format, as Triton reads it."""
    return str(text_format.MessageToString(config, as_utf8=True))


def _overlay_batching(config: ModelConfig, batching: DynamicBatching) -> None:
    # The fields the spec models are the spec's; Triton's others (priority levels and
    # their queue policies) stay as the repository wrote them.
    block = config.dynamic_batching
    block.SetInParent()  # selects dynamic batching in the scheduling oneof
    del block.preferred_batch_size[:]
    block.preferred_batch_size.extend(batching.preferred_batch_sizes)
    block.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
    block.preserve_ordering = batching.preserve_ordering
    block.ClearField("default_queue_policy")
    policy = batching.default_queue_policy
    if policy is not None:
        block.default_queue_policy.CopyFrom(
            ModelQueuePolicy(
                timeout_action=policy.timeout_action,
                default_timeout_microseconds=policy.default_timeout_microseconds,
                allow_timeout_override=policy.allow_timeout_override,
                max_queue_size=policy.max_queue_size,
            )
        )


def overlay(base: ModelConfig | None, model: ModelSpec, triton: TritonSpec) -> ModelConfig:
    """The configuration Triton loads: ``base`` (the repository's; None: it has none)
    with what ``triton`` sets overlaid, and nothing else changed. Pure: ``base`` is
    copied, never modified."""
    config = ModelConfig()
    if base is not None:
        config.CopyFrom(base)
    # Triton needs the name to match the directory; a repository's config may omit it.
    config.name = model.name
    if triton.backend is not None:
        config.backend = triton.backend
    elif base is None:
        config.backend = DEFAULT_BACKEND
    vllm = config.backend == VLLM_BACKEND
    if triton.max_batch_size is not None:
        config.max_batch_size = triton.max_batch_size
    elif base is None:
        # The vllm backend batches by itself and refuses a batch dimension.
        config.max_batch_size = 0 if vllm else DEFAULT_MAX_BATCH_SIZE
    if triton.dynamic_batching is not None:
        _overlay_batching(config, triton.dynamic_batching)
    group = triton.instance_group
    if base is None or (group is not None and not config.instance_group):
        kind = "KIND_MODEL" if vllm else DEFAULT_INSTANCE_KIND  # vLLM places its own
        config.instance_group.add(kind=kind, count=DEFAULT_INSTANCE_COUNT)
    if group is not None:
        for existing in config.instance_group:
            if group.kind is not None:
                existing.kind = cast(Kind, Kind.Value(group.kind))
            if group.count is not None:
                existing.count = group.count
    if triton.decoupled is not None:
        config.model_transaction_policy.decoupled = triton.decoupled
    for key in sorted(triton.parameters):
        config.parameters[key].string_value = triton.parameters[key]
    if triton.model_warmup is not None:
        _overlay_warmup(config, triton.model_warmup)
    return config


def _overlay_warmup(config: ModelConfig, samples: Sequence[WarmupSample]) -> None:
    # The spec's samples replace the repository's: a list has no key to merge on.
    del config.model_warmup[:]
    for sample in samples:
        warmup = config.model_warmup.add(
            name=sample.name, batch_size=sample.batch_size, count=sample.count
        )
        for name in sorted(sample.inputs):
            given = sample.inputs[name]
            tensor = warmup.inputs[name]
            tensor.data_type = cast(DataType, DataType.Value(given.data_type))
            tensor.dims.extend(given.dims)
            if given.input_data_file is not None:
                tensor.input_data_file = given.input_data_file
            elif given.random_data:
                tensor.random_data = True
            else:
                tensor.zero_data = True


def render_config_pbtxt(
    model: ModelSpec, triton: TritonSpec, repository_config: str | None = None
) -> str:
    """The config.pbtxt this revision's ConfigMap holds: ``repository_config`` (the text
    of the model's own config.pbtxt; None: it has none) with the spec overlaid."""
    base = None
    if repository_config is not None:
        base = parse_model_config(repository_config, f"{model.name}/config.pbtxt")
    return render_model_config(overlay(base, model, triton))


# --- a flat view, for the environment diff --------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _scalar(field: FieldDescriptor, value: object) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type.values_by_number.get(int(value))  # type: ignore[call-overload]
        return enum.name if enum is not None else str(value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    return str(value)


def _flatten(prefix: str, message: Message, out: dict[str, str]) -> None:
    for field, value in message.ListFields():
        key = f"{prefix}.{_camel(field.name)}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for entry_key in sorted(value):
                entry = value[entry_key]
                if value_field.message_type is None:
                    out[f"{key}.{entry_key}"] = _scalar(value_field, entry)
                elif list(entry.DESCRIPTOR.fields_by_name) == ["string_value"]:
                    out[f"{key}.{entry_key}"] = entry.string_value  # ModelParameter
                else:
                    _flatten(f"{key}.{entry_key}", entry, out)
        elif field.is_repeated:
            if field.message_type is None:
                out[key] = "[" + ", ".join(_scalar(field, v) for v in value) + "]"
            elif len(value) == 1:
                _flatten(key, value[0], out)
            else:
                for index, item in enumerate(value):
                    _flatten(f"{key}.{index}", item, out)
        elif field.message_type is not None:
            before = len(out)
            _flatten(key, value, out)
            if len(out) == before:
                out[key] = "{}"  # a block present with nothing set: still a difference
        else:
            out[key] = _scalar(field, value)


def flatten_model_config(config: ModelConfig, prefix: str = "triton") -> Mapping[str, str]:
    """``config`` as ``prefix.camelPath`` keys and text values, for the environment diff.

    Nested messages become dotted paths; a repeated scalar is one ``[a, b]`` value; a
    repeated message with one item shows its fields directly, several ``.0.``, ``.1.``;
    map entries are ``prefix.parameters.KEY`` (a ``ModelParameter`` just its text).
    Fields at their default are not set in proto3 and do not appear.
    """
    out: dict[str, str] = {}
    _flatten(prefix, config, out)
    return out
