"""Metric sources: where the analysis' numbers come from (the I/O edge of the judge).

A source turns an arm's :class:`~llmcanary.sources.base.Scope` and the spec's analysis
into an :class:`~llmcanary.analysis.types.ArmReading` (counts and per-pod histograms);
the pure :mod:`llmcanary.analysis` judges them. Prometheus is one source
(:mod:`.prometheus`, with the PromQL of each preset in :mod:`.promql`); another (Datadog,
OpenTelemetry) is one more module implementing :class:`~.base.MetricSource`.
"""
