"""``llmcanary bench``'s load generator: streaming requests against Triton, and what
they measured (TTFT, TPOT, end-to-end latency, throughput, errors)."""
