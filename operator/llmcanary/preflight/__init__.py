"""Preflight: the checks that run before a canary gets any traffic.

Each check is a PURE function over injected data (spec, node and pod dicts, pod specs)
plus, beside it, a thin I/O module that gathers that data from the cluster. What each
check does and how to read its result: ``docs/preflight.md``.
"""
