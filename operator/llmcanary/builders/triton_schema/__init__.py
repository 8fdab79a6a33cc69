"""Triton's model configuration schema, ``ModelConfig``, as protobuf messages.

``model_config.proto`` is Triton's own (BSD-3-Clause, its header kept), copied from
triton-inference-server/common with only its package renamed; ``model_config_pb2.py``
and ``.pyi`` are generated from it by ``make protos`` (grpcio-tools), never edited.
A unit test regenerates them and compares, so the three cannot drift apart.

config.pbtxt is this message in protobuf text format: parsing and writing it with the
schema (``google.protobuf.text_format``) keeps every field Triton knows, including the
ones llmcanary never models.
"""

from llmcanary.builders.triton_schema.model_config_pb2 import ModelConfig

__all__ = ["ModelConfig"]
