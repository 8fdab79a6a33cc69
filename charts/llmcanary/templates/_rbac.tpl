{{/*
The operator's permissions: the ONE place they are written. rbac.yaml renders them into
the ClusterRole (all namespaces) or into a Role per watched namespace plus a ClusterRole
for the cluster-scoped reads. Each rule says which code needs it; nothing here is a
wildcard. tests/unit/test_helm_chart.py checks the rendered rules against this list, and
tests/integration/test_chart.py runs the canary flow under exactly these rules.
docs/install.md has the same table for readers.
*/}}

{{/* Rules in the namespaces the operator serves. */}}
{{- define "llmcanary.rbac.namespacedRules" -}}
# kopf watches LLMDeployments (list, watch); the reconciler reads each one fresh (get);
# kopf adds and removes its finalizer llmcanary.io/finalizer (patch).
- apiGroups: ["llmcanary.io"]
  resources: ["llmdeployments"]
  verbs: ["get", "list", "watch", "patch"]
# The reconciler writes the whole rollout state into status (status.py write_status).
- apiGroups: ["llmcanary.io"]
  resources: ["llmdeployments/status"]
  verbs: ["patch"]
# One Deployment per revision: kube/children.ensure (get, then server-side apply = patch,
# plus create for a new one), resizing (patch), listing a resource's revisions (list),
# and kopf's child watch (list, watch; main.CHILD_KINDS); the fresh baseline
# NAME-STABLEREV-baseline is deleted when its rollout ends.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# NAME-stable, NAME-canary, NAME-baseline (deleted with its Deployment), and NAME for the
# replicas router (deleted when the router is switched away); kopf's child watch.
# Preflight reads (get) the Service behind a *.svc dependency: no ExternalName, a selector
# (preflight/dependencies.service_refusal).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# One ConfigMap per revision, made from the read of its repository (and the GPU probe's
# script); preflight reads
# ConfigMaps that spec.env references (envdiff_source); kopf's child watch.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Readiness of a revision's pods (list), their llmcanary.io/track label (patch), kopf's
# child watch (watch); with rbac.inferencePool, get: granted on to the endpoint pickers'
# Role (the operator may only grant what it holds).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"{{ if .Values.rbac.inferencePool }}, "get"{{ end }}]
# Why a revision's Triton crashed: the crashed run's log (reconciler/observe.CrashLogs),
# read once per crash; the kubelet's 2 KiB termination message rarely holds the model's
# own error. Also the repository read's listing and the GPU probe's reading.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Preflight resolves spec.env valueFrom secretKeyRef to compare revisions; values are
# only hashed, never logged or stored. Only get: the operator never lists Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# The gatewayAPI router's HTTPRoute NAME: created, its weights patched, deleted when the
# router is switched away; kopf's child watch.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each new revision's model repository is read by a Job of one pod
# (reconciler/revision_config: get, then server-side apply to create it), its listing in
# the pod's log (pods/log, above); a read that failed is deleted once reported, so that
# the next attempt reads afresh. The opt-in GPU memory probe Job (preflight/gpu_probe).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create", "patch", "delete"]
# kopf posts Events (the operator's Normal/Warning events on each LLMDeployment).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The inferencePool router's InferencePools NAME-<track>: kopf's child watch (a Gateway's
# word on a pool moves the rollout; read-only without the router, so that the watch never
# fails where the CRD is installed); with rbac.inferencePool, created and re-pointed
# (patch), deleted with their track or when the router is switched away.
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch"{{ if .Values.rbac.inferencePool }}, "create", "patch", "delete"{{ end }}]
{{- if .Values.rbac.istio }}
# rbac.istio: the istio router's VirtualService NAME (no watch: not a watched child).
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.inferencePool }}
# rbac.inferencePool: each pool's endpoint picker runs as the ServiceAccount
# NAME-endpoint-picker with a Role NAME-endpoint-picker of the LLMDeployment's namespace
# (routing/inference_pool.build_picker_access): created once, deleted with the router.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch", "delete"]
# What the pickers' Role grants them beyond pods and pools (read-only): the extension's
# InferenceObjectives and model rewrites, which the operator itself never reads.
- apiGroups: ["inference.networking.x-k8s.io"]
  resources: ["inferenceobjectives", "inferencemodelrewrites"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end -}}

{{/* Rules that only a ClusterRole can grant. */}}
{{- define "llmcanary.rbac.clusterRules" -}}
# kopf observes CRDs so that a router's API installed later (Gateway API, Istio) is
# noticed without a restart (kopf._core.reactor.observation).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.rbac.gpuCapacity }}
# rbac.gpuCapacity: preflight's GPU capacity check counts free nvidia.com/gpu per node
# type: the nodes and the unfinished pods of every namespace (preflight/gpu_cluster).
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list"]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end }}
{{- end }}
{{- if .Values.watchNamespaces }}
# kopf checks that the watched namespaces exist and follows them (namespace observer).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- else }}
# kopf peering across the cluster: each replica patches its heartbeat into the
# ClusterKopfPeering's status and watches the others' (kopf._core.engines.peering).
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end -}}

{{/* kopf peering per namespace, in a Role of each watched namespace. */}}
{{- define "llmcanary.rbac.peeringRules" -}}
# kopf peering in this namespace: heartbeats in the KopfPeering's status.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end -}}
