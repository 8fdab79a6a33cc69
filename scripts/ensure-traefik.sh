#!/usr/bin/env bash
# Builds a pinned Traefik v3 (the local stack's Gateway API implementation) from its
# Go module into $LLMCANARY_CACHE/bin/traefik, with Go's caches under
# $LLMCANARY_CACHE/go like devcluster/build.sh and ensure-helm.sh.
#
#   scripts/ensure-traefik.sh          # or: make traefik-bin
#
# Why a source build: there is no Debian package of Traefik v3, and the release
# tarballs are on GitHub, which this project's machines cannot reach; the module
# proxy serves Traefik and every dependency of v3.6.x (v3.7.x is incomplete there).
# Traefik's go.mod has replace directives, so `go install pkg@version` refuses it:
# the module is copied out of the module cache and built as the main module, which
# is also how its own Makefile builds it (the web UI's static files are not needed:
# the dashboard stays off).
#
# Idempotent: when the binary exists, reports the pinned version and its stamp (the
# version and this script's hash) matches, nothing is built. Concurrent runs take turns
# (flock). The first build takes about 6 minutes on 2 cores (2.4 GB of modules, 2.5 GB of
# build cache).
set -euo pipefail

version="${LLMCANARY_TRAEFIK_VERSION:-v3.6.12}"
module=github.com/traefik/traefik/v3
cache="${LLMCANARY_CACHE:-$HOME/.cache/llmcanary}"
bin="$cache/bin"
traefik="$bin/traefik"
stamp_file="$bin/.traefik.stamp"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stamp="$version $(sha256sum "$here/ensure-traefik.sh" | cut -d' ' -f1)"

export GOMODCACHE="$cache/go/mod"
export GOCACHE="$cache/go/build"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf 'scripts/ensure-traefik.sh: %s\n' "$*" >&2; }
# `traefik version` prints "Version:      3.6.12" (no leading v).
current() {
  [[ -x "$traefik" ]] && "$traefik" version 2>/dev/null | awk '$1 == "Version:" {sub(/^v/, "", $2); print "v" $2}'
}
up_to_date() {
  [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" && "$(current || true)" == "$version" ]]
}

if up_to_date; then
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH (Go >= 1.25 is needed to build Traefik $version)"; exit 1; }

mkdir -p "$bin" "$GOMODCACHE" "$GOCACHE"
exec 9>"$cache/.traefik.lock"
flock 9
# Another run may have built it while this one waited for the lock.
if up_to_date; then
  exit 0
fi
rm -f "$stamp_file"

log "building Traefik $version (the first build takes about 6 minutes on 2 cores)"
start=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dir="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$dir" ]] || { log "go mod download $module@$version gave no source directory"; exit 1; }
cp -R "$dir/." "$work/src"
chmod -R u+w "$work/src"
(
  cd "$work/src"
  # Stamped the way Traefik's Makefile does, so that `traefik version` and its
  # User-Agent report the release.
  go build -trimpath -ldflags "-s -w -X $module/pkg/version.Version=${version#v}" \
    -o "$work/traefik" ./cmd/traefik
)
mv -f "$work/traefik" "$traefik"
got="$(current || true)"
[[ "$got" == "$version" ]] || { log "built traefik reports version '$got', expected $version"; exit 1; }
printf '%s\n' "$stamp" >"$stamp_file"
log "built Traefik $version in $((SECONDS - start))s: $traefik"
