#!/usr/bin/env bash
# Builds a pinned helm v3 from its Go module (through the Go module proxy: there is
# no Debian or PyPI package of helm) into $LLMCANARY_CACHE/bin/helm, with Go's
# caches under $LLMCANARY_CACHE/go like devcluster/build.sh. The chart's tests
# (tests/unit/test_helm_chart.py, tests/integration/test_chart.py) run this binary.
#
#   scripts/ensure-helm.sh          # or: make helm-bin
#
# Idempotent: when $LLMCANARY_CACHE/bin/helm exists, `helm version` reports the pinned
# version and its stamp (the version and this script's hash) matches, nothing is built. Concurrent runs take turns (flock). The first
# build takes several minutes on 2 cores.
set -euo pipefail

version="${LLMCANARY_HELM_VERSION:-v3.19.5}"
cache="${LLMCANARY_CACHE:-$HOME/.cache/llmcanary}"
bin="$cache/bin"
helm="$bin/helm"
stamp_file="$bin/.helm.stamp"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stamp="$version $(sha256sum "$here/ensure-helm.sh" | cut -d' ' -f1)"

export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf 'scripts/ensure-helm.sh: %s\n' "$*" >&2; }
current() { [[ -x "$helm" ]] && "$helm" version --template '{{.Version}}' 2>/dev/null; }
up_to_date() {
  [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" && "$(current || true)" == "$version" ]]
}

if up_to_date; then
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH (Go >= 1.24 is needed to build helm $version)"; exit 1; }

mkdir -p "$bin" "$GOMODCACHE" "$GOCACHE"
exec 9>"$cache/.helm.lock"
flock 9
# Another run may have built it while this one waited for the lock.
if up_to_date; then
  exit 0
fi
rm -f "$stamp_file"

log "building helm $version (the first build takes several minutes on 2 cores)"
start=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Stamped the way helm's Makefile does: `helm version` reports the pinned version, and
# `helm template`/`lint` assume the Kubernetes version of the client-go helm is built
# with (a plain build assumes v1.20, which the chart's kubeVersion refuses).
gomod="$(go mod download -json "helm.sh/helm/v3@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")"
IFS=. read -r cg_major kube_minor _ <<<"${client_go#v}"
kube_major=$((cg_major + 1))
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=$kube_major -X $pkg.k8sVersionMinor=$kube_minor"
done
GOBIN="$work" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version"
mv -f "$work/helm" "$helm"
got="$(current || true)"
[[ "$got" == "$version" ]] || { log "built helm reports version '$got', expected $version"; exit 1; }
printf '%s\n' "$stamp" >"$stamp_file"
log "built helm $version (Kubernetes $kube_major.$kube_minor) in $((SECONDS - start))s: $helm"
