"""What the operator tells the outside about itself: Prometheus metrics (an edge)."""
