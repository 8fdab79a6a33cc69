"""llmcanary: canary rollouts of LLMs served by NVIDIA Triton, as a Kubernetes operator."""

__version__ = "0.1.0"
