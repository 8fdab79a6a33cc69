-- Hold the rollout where it is, as `kubectl llmcanary pause` does.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["llmcanary.io/paused"] = "true"
return obj
