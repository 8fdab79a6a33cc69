"""tiny-pipeline's postprocessing: the generated text without trailing whitespace.

``TINY_PIPELINE_DELAY_MS`` (an environment variable, default 0) makes every batch this
much slower: a canary of the pipeline that sets it is a measurably slower revision.
"""

from __future__ import annotations

import os
import site
import time
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
        self.delay_s = float(os.environ.get("TINY_PIPELINE_DELAY_MS", "0") or 0) / 1000.0

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.delay_s:
            time.sleep(self.delay_s)
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "RAW_TEXT").as_numpy()
            trimmed = [bytes(t).rstrip() for t in texts.reshape(-1)]
            out = np.array(trimmed, dtype=np.object_).reshape(texts.shape)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", out)]))
        return responses
