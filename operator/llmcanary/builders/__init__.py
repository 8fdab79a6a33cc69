"""PURE builders: LLMDeployment spec -> Kubernetes object dicts and Triton config text.

Nothing here talks to a cluster; the same inputs always build the same objects.
"""

from llmcanary.builders.meta import Owner

__all__ = ["Owner"]
