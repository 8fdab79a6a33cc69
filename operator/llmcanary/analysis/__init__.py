"""PURE canary verdicts from per-arm measurements; metric providers live in providers/.

Kept free of kopf and the Kubernetes client by an import-linter contract (pyproject).
"""
