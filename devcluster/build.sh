#!/usr/bin/env bash
# Builds the dev cluster's binaries (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok: one multi-call Go
# binary) into $LLMCANARY_CACHE/bin and copies the data files the cluster
# needs from the pinned Go modules: the Gateway API standard CRDs and KWOK's
# default stages. Called by `make` and by llmcanary.devcluster.ensure_built().
#
# Idempotent: a stamp (sha256 of this directory's sources) is written last,
# and a run whose stamp matches and whose outputs exist does nothing.
set -euo pipefail

# The Gateway API release whose standard-channel CRDs the cluster installs
# (v1.7 needs Go >= 1.27 to download as a module).
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LLMCANARY_CACHE:-$HOME/.cache/llmcanary}"
bin="$cache/bin"
crds="$cache/gateway-api-crds"
kwokdata="$cache/kwok"
main=llmcanary-k8s
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOFLAGS="-mod=readonly -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf 'devcluster/build.sh: %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go is not on PATH (Go >= 1.26 is needed)"; exit 1; }

# What the outputs depend on: the module files, the Go sources, this script
# (it pins the Gateway API version), and the Go version.
stamp="$(
  cd "$here"
  {
    go env GOVERSION
    printf '%s\n' "$GATEWAY_API_VERSION"
    find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
)"

up_to_date() {
  [[ -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$stamp" ]] || return 1
  local t
  for t in "$main" "${tools[@]}"; do [[ -x "$bin/$t" ]] || return 1; done
  compgen -G "$crds/*.yaml" >/dev/null && compgen -G "$kwokdata/stages/*.yaml" >/dev/null \
    && [[ -f "$kwokdata/rbac/role.yaml" ]]
}

if up_to_date; then
  log "up to date ($bin)"
  exit 0
fi

mkdir -p "$bin" "$GOMODCACHE" "$GOCACHE"
rm -f "$bin/.stamp"

log "building $main (the first build takes about 8 minutes on 2 cores)"
start=$SECONDS
(
  cd "$here"
  # Stamp the Kubernetes version the way upstream's hack/lib/version.sh does;
  # a plain `go build` reports v0.0.0-master, which clients and the
  # apiserver's own compatibility-version logic would see.
  kube="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
  IFS=. read -r major minor _ <<<"${kube#v}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  go build -trimpath -ldflags="$ldflags" -o "$bin/$main.tmp" .
)
mv -f "$bin/$main.tmp" "$bin/$main"
for t in "${tools[@]}"; do ln -sfn "$main" "$bin/$t"; done
log "built in $((SECONDS - start))s"

# Module directory of a pinned dependency (downloaded on demand).
moddir() {
  (cd "$here" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
}

# Gateway API standard channel CRDs (GatewayClass, Gateway, HTTPRoute, ...).
gw="$(moddir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")"
[[ -d "$gw/config/crd/standard" ]] || { log "no config/crd/standard in $gw"; exit 1; }
rm -rf "$crds.tmp" && mkdir -p "$crds.tmp"
cp "$gw"/config/crd/standard/*.yaml "$crds.tmp/"
chmod -R u+w "$crds.tmp"
rm -rf "$crds" && mv "$crds.tmp" "$crds"
log "Gateway API $GATEWAY_API_VERSION CRDs in $crds"

# KWOK's default stages (what kwokctl feeds the kwok controller: nodes become
# Ready and keep a lease, pods become Running and Ready, deleted pods go away)
# and the ClusterRole its controller needs.
kwok="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
rm -rf "$kwokdata.tmp" && mkdir -p "$kwokdata.tmp/stages" "$kwokdata.tmp/rbac"
cp "$kwok/kustomize/stage/node/fast/node-initialize.yaml" \
  "$kwok/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
  "$kwok/kustomize/stage/pod/fast/pod-ready.yaml" \
  "$kwok/kustomize/stage/pod/fast/pod-complete.yaml" \
  "$kwok/kustomize/stage/pod/fast/pod-delete.yaml" \
  "$kwokdata.tmp/stages/"
cp "$kwok/kustomize/rbac/role.yaml" "$kwokdata.tmp/rbac/"
chmod -R u+w "$kwokdata.tmp"
rm -rf "$kwokdata" && mv "$kwokdata.tmp" "$kwokdata"

printf '%s\n' "$stamp" >"$bin/.stamp"
log "done: $bin"
