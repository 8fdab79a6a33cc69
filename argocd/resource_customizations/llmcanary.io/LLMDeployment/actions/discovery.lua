-- The actions Argo CD offers on an LLMDeployment, each enabled only when it can act.
local actions = {}
local status = obj.status or {}
local annotations = obj.metadata.annotations or {}
local phase = status.phase
-- A rolled-back revision stays in status.canaryRevision: what counts is the phase.
local in_flight = status.canaryRevision ~= nil
  and (phase == "Preflight" or phase == "Progressing" or phase == "Paused")
local held = annotations["llmcanary.io/paused"] == "true"
actions["promote"] = { ["disabled"] = not in_flight }
actions["abort"] = { ["disabled"] = not (in_flight or phase == "Promoting") }
actions["retry"] = {
  ["disabled"] = status.rolledBackRevision == nil or not (phase == "RolledBack" or phase == "Failed"),
}
actions["pause"] = { ["disabled"] = held }
actions["resume"] = { ["disabled"] = not (held or phase == "Paused") }
return actions
