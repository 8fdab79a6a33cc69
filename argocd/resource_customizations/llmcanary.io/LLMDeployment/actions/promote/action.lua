-- Ask the llmcanary operator to promote: the same annotation `kubectl llmcanary promote` sets,
-- with a new value each time (the operator acts on a value it has not seen).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["llmcanary.io/promote"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
