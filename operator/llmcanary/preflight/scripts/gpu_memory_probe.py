"""GPU memory probe: one JSON line per visible GPU with its free and total bytes.

Run by the operator's opt-in preflight probe Job on a node of the target GPU type, in an
image with python and torch (``nvcr.io/nvidia/pytorch`` by default). It is package data of
``llmcanary``, not one of its modules: its directory has no ``__init__.py`` and nothing
imports it, so torch never enters the operator's import path. The operator reads this file
(``llmcanary.preflight.gpu_probe.probe_script``), ships it to the Job in a ConfigMap and
reads the lines from the pod's log.

    {"device": 0, "name": "NVIDIA H100 80GB HBM3", "free_bytes": ..., "total_bytes": ...}

Without a CUDA device it prints ``{"error": "no CUDA device"}`` and exits with 2.
"""

from __future__ import annotations

import json
import sys


def emit(line: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main() -> int:
    try:
        import torch
    except ImportError as exc:
        emit({"error": f"torch is not installed: {exc}"})
        return 3
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        emit({"error": "no CUDA device"})
        return 2
    for device in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(device)
        emit(
            {
                "device": device,
                "name": torch.cuda.get_device_name(device),
                "free_bytes": int(free),
                "total_bytes": int(total),
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
