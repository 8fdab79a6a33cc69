"""tiny-pipeline's preprocessing: the prompt with its whitespace collapsed.

Shaped like Triton's python_backend ``add_sub`` example on purpose: the tensors are
declared only in ``config.pbtxt`` (no ``auto_complete_config``), and ``initialize`` reads
the output's data type from that config. A config that lost them (one rendered from an
LLMDeployment's spec alone) fails the load with ``TypeError: 'NoneType' object is not
subscriptable``: what the operator's overlay of the repository's config must never do.
"""

from __future__ import annotations

import json
import os
import site
from typing import Any

# As tiny-llm's: the backend's embedded interpreter ignores PYTHONPATH, where the local
# stack names the directory numpy lives in.
for _entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _entry:
        site.addsitedir(_entry)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        output = pb_utils.get_output_config_by_name(config, "CLEAN_PROMPT")
        self.output_dtype = pb_utils.triton_string_to_numpy(output["data_type"])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            prompts = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy()
            clean = [b" ".join(bytes(p).split()) for p in prompts.reshape(-1)]
            out = np.array(clean, dtype=self.output_dtype).reshape(prompts.shape)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("CLEAN_PROMPT", out)]))
        return responses
