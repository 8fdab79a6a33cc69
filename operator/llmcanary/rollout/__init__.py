"""PURE rollout logic: revisions, weights and the state machine. No I/O, no clients."""
