-- Ask the llmcanary operator to retry: the same annotation `kubectl llmcanary retry` sets,
-- with a new value each time (the operator acts on a value it has not seen).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["llmcanary.io/retry"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
