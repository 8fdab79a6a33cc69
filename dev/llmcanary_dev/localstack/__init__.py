"""The local data plane (docs/local-stack.md): real ``tritonserver`` processes for the
pods of the dev cluster, a real Prometheus scraping them, and Traefik, a Gateway API
implementation, serving the operator's HTTPRoutes. An edge, like ``devcluster``: it
does I/O, decides nothing."""
