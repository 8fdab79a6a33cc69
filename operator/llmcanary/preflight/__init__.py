"""Preflight: the checks that run before a canary gets any traffic.

Each check is a PURE function over injected data (spec, node and pod dicts, pod specs)
plus, beside it, a thin I/O module that gathers that data from the cluster. See
``DESIGN.md`` section 4.
"""
