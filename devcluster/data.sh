#!/usr/bin/env bash
# Copies the data files the dev cluster needs from pinned Go modules into
# $LLMCANARY_CACHE: the Gateway API standard CRDs, the Gateway API Inference
# Extension's CRDs (InferencePool), Istio's VirtualService and DestinationRule
# CRDs, and KWOK's default stages, RBAC and Logs CRD. Run by build.sh
# (which holds the build lock); kept out of the binary's stamp so that a new
# CRD release does not relink the binary.
#
# Idempotent: its own stamp (this script, the module files, the pinned
# versions) is written last; a run whose stamp matches and whose outputs exist
# does nothing.
set -euo pipefail

# The Gateway API release whose standard-channel CRDs the cluster installs
# (v1.7 needs Go >= 1.27 to download as a module).
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
# The istio.io/api release whose kubernetes/customresourcedefinitions.gen.yaml
# the Istio CRDs are taken from (Istio 1.31).
ISTIO_API_VERSION="${ISTIO_API_VERSION:-v1.31.4}"
# The Gateway API Inference Extension release whose CRDs (InferencePool v1, and the
# x-k8s.io alpha kinds its endpoint picker reads) the cluster installs: v1.5.0, the
# last release that also ships the endpoint picker the operator runs by default (the
# module serves exact versions only; v1.6.1's zip is not served).
INFERENCE_EXTENSION_VERSION="${INFERENCE_EXTENSION_VERSION:-v1.5.0}"
ISTIO_CRDS=(virtualservices destinationrules)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LLMCANARY_CACHE:-$HOME/.cache/llmcanary}"
gwcrds="$cache/gateway-api-crds"
istiocrds="$cache/istio-crds"
infcrds="$cache/inference-extension-crds"
kwokdata="$cache/kwok"
stampfile="$cache/.data-stamp"

export GOMODCACHE="$cache/go/mod"
export GOFLAGS="-mod=readonly -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf 'devcluster/data.sh: %s\n' "$*" >&2; }

stamp="$(
  cd "$here"
  {
    printf '%s\n' "$GATEWAY_API_VERSION" "$ISTIO_API_VERSION" "$INFERENCE_EXTENSION_VERSION"
    sha256sum data.sh go.mod go.sum
  } | sha256sum | cut -d' ' -f1
)"

up_to_date() {
  [[ -f "$stampfile" && "$(cat "$stampfile")" == "$stamp" ]] || return 1
  local c
  for c in "${ISTIO_CRDS[@]}"; do [[ -s "$istiocrds/networking.istio.io_$c.yaml" ]] || return 1; done
  [[ -s "$infcrds/inference.networking.k8s.io_inferencepools.yaml" ]] || return 1
  compgen -G "$gwcrds/*.yaml" >/dev/null && compgen -G "$kwokdata/stages/*.yaml" >/dev/null \
    && [[ -f "$kwokdata/rbac/role.yaml" && -f "$kwokdata/crds/kwok.x-k8s.io_logs.yaml" ]]
}

if up_to_date; then
  log "up to date ($cache)"
  exit 0
fi
command -v go >/dev/null || { log "go is not on PATH (Go >= 1.26 is needed)"; exit 1; }
mkdir -p "$GOMODCACHE"
rm -f "$stampfile"

# Module directory of a pinned dependency (downloaded on demand).
moddir() {
  (cd "$here" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
}

# Replace directory $1 with $1.tmp, made writable (module files are read-only).
publish() {
  chmod -R u+w "$1.tmp"
  rm -rf "$1" && mv "$1.tmp" "$1"
}

# Gateway API standard channel CRDs (GatewayClass, Gateway, HTTPRoute, ...).
gw="$(moddir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")"
[[ -d "$gw/config/crd/standard" ]] || { log "no config/crd/standard in $gw"; exit 1; }
rm -rf "$gwcrds.tmp" && mkdir -p "$gwcrds.tmp"
cp "$gw"/config/crd/standard/*.yaml "$gwcrds.tmp/"
publish "$gwcrds"
log "Gateway API $GATEWAY_API_VERSION CRDs in $gwcrds"

# The Inference Extension's CRDs: InferencePool (inference.networking.k8s.io/v1) and
# the alpha kinds beside it.
inf="$(moddir "sigs.k8s.io/gateway-api-inference-extension@$INFERENCE_EXTENSION_VERSION")"
[[ -f "$inf/config/crd/bases/inference.networking.k8s.io_inferencepools.yaml" ]] \
  || { log "no InferencePool CRD in $inf/config/crd/bases"; exit 1; }
rm -rf "$infcrds.tmp" && mkdir -p "$infcrds.tmp"
cp "$inf"/config/crd/bases/*.yaml "$infcrds.tmp/"
publish "$infcrds"
log "Gateway API Inference Extension $INFERENCE_EXTENSION_VERSION CRDs in $infcrds"

# Istio's traffic CRDs, picked out of the one generated file that holds all
# of Istio's CRDs (documents separated by '---'; a CRD's metadata.name is the
# only key at two spaces' indent called name).
istio="$(moddir "istio.io/api@$ISTIO_API_VERSION")"
gen="$istio/kubernetes/customresourcedefinitions.gen.yaml"
[[ -f "$gen" ]] || { log "no kubernetes/customresourcedefinitions.gen.yaml in $istio"; exit 1; }
rm -rf "$istiocrds.tmp" && mkdir -p "$istiocrds.tmp"
for c in "${ISTIO_CRDS[@]}"; do
  out="$istiocrds.tmp/networking.istio.io_$c.yaml"
  awk -v want="  name: $c.networking.istio.io" -v out="$out" '
    /^---$/ { if (keep) printf "%s", doc > out; doc = ""; keep = 0; next }
    { doc = doc $0 "\n"; if ($0 == want) keep = 1 }
    END { if (keep) printf "%s", doc > out }
  ' "$gen"
  [[ -s "$out" ]] || { log "no CRD $c.networking.istio.io in $gen"; exit 1; }
done
publish "$istiocrds"
log "Istio $ISTIO_API_VERSION CRDs (${ISTIO_CRDS[*]}) in $istiocrds"

# KWOK's default stages (what kwokctl feeds the kwok controller: nodes become
# Ready and keep a lease, pods become Running and Ready, deleted pods go away)
# the ClusterRole its controller needs, and its Logs CRD: the local data plane
# names each container's log file in a Logs object, and KWOK serves it to
# `kubectl logs` as a kubelet would.
kwok="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
rm -rf "$kwokdata.tmp" && mkdir -p "$kwokdata.tmp/stages" "$kwokdata.tmp/rbac" "$kwokdata.tmp/crds"
cp "$kwok/kustomize/stage/node/fast/node-initialize.yaml" \
  "$kwok/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
  "$kwok/kustomize/stage/pod/fast/pod-ready.yaml" \
  "$kwok/kustomize/stage/pod/fast/pod-complete.yaml" \
  "$kwok/kustomize/stage/pod/fast/pod-delete.yaml" \
  "$kwokdata.tmp/stages/"
cp "$kwok/kustomize/rbac/role.yaml" "$kwokdata.tmp/rbac/"
cp "$kwok/kustomize/crd/bases/kwok.x-k8s.io_logs.yaml" "$kwokdata.tmp/crds/"
publish "$kwokdata"

printf '%s\n' "$stamp" >"$stampfile"
log "done: $cache"
