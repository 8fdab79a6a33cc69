"""Traffic routers: how a weight split between the tracks is applied in the cluster."""

from llmcanary.routing.base import Router, router_for

__all__ = ["Router", "router_for"]
