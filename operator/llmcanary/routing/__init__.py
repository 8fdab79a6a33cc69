"""Traffic routers: how a weight split between the tracks is applied in the cluster."""

from llmcanary.routing.base import ROUTER_KINDS, Router, Weights, router_for, router_of_kind

__all__ = ["ROUTER_KINDS", "Router", "Weights", "router_for", "router_of_kind"]
