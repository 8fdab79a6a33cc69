#!/usr/bin/env bash
# Builds the dev cluster's binaries (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok: one multi-call Go
# binary) into $LLMCANARY_CACHE/bin, then runs data.sh, which copies the data
# files the cluster needs (CRDs, KWOK's stages) from pinned Go modules.
# Called by `make` and by llmcanary_dev.devcluster.ensure_built().
#
# Idempotent: a stamp (sha256 of the Go version, the module files, the Go
# sources and this script) is written last, and a run whose stamp matches and
# whose outputs exist does not build; data.sh keeps its own stamp, so a new
# CRD release does not relink the binary. Concurrent runs take turns (flock).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LLMCANARY_CACHE:-$HOME/.cache/llmcanary}"
bin="$cache/bin"
main=llmcanary-k8s
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOFLAGS="-mod=readonly -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf 'devcluster/build.sh: %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go is not on PATH (Go >= 1.26 is needed)"; exit 1; }

mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9

# What the binary depends on: the module files, the Go sources, this script
# (the build flags) and the Go version.
stamp="$(
  cd "$here"
  {
    go env GOVERSION
    find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
)"

up_to_date() {
  [[ -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$stamp" ]] || return 1
  local t
  for t in "$main" "${tools[@]}"; do [[ -x "$bin/$t" ]] || return 1; done
}

if up_to_date; then
  log "up to date ($bin)"
  exec bash "$here/data.sh"
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

printf '%s\n' "$stamp" >"$bin/.stamp"
log "done: $bin"
exec bash "$here/data.sh"
