"""Metrics providers: the only part of ``analysis`` that does I/O."""
