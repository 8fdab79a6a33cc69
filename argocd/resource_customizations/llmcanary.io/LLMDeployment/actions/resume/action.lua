-- Continue the rollout, as `kubectl llmcanary resume` does: drop the pause annotation and
-- ask the operator to resume (which also continues a rollout it paused itself).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["llmcanary.io/paused"] = nil
obj.metadata.annotations["llmcanary.io/resume"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
