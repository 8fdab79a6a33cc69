-- Argo CD health of an LLMDeployment, from the status its operator writes.
--   Stable -> Healthy; Initializing, Preflight, Progressing, Promoting -> Progressing;
--   Paused -> Suspended; RolledBack, Failed -> Degraded;
--   Progressing whatever the phase while the operator has not observed the latest spec.
--   The message names the canary and, once checked, its headline criterion
--   ("ttft p95 412 / 380 ms": canary / reference arm).
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the llmcanary operator to report a phase"
  return hs
end
local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the llmcanary operator to observe generation " .. tostring(generation)
  return hs
end
local phase = status.phase
local detail = status.message or ""
local where = ""
if status.canaryRevision ~= nil then
  where = "canary " .. status.canaryRevision .. " at " .. tostring(status.canaryWeight or 0) .. "%"
end
local statuses = {
  Stable = "Healthy",
  Initializing = "Progressing",
  Preflight = "Progressing",
  Progressing = "Progressing",
  Promoting = "Progressing",
  Paused = "Suspended",
  RolledBack = "Degraded",
  Failed = "Degraded",
}
hs.status = statuses[phase] or "Unknown"
local parts = { phase }
if where ~= "" then table.insert(parts, where) end
-- The last check's headline criterion (its first failing one, else its first).
if where ~= "" and status.headline ~= nil then table.insert(parts, status.headline) end
if detail ~= "" then table.insert(parts, detail) end
hs.message = table.concat(parts, ": ")
return hs
