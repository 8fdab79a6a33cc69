#!/usr/bin/env bash
# Puts binaries from one Debian package under $LLMCANARY_CACHE/<package>/bin for the
# tests and the local stack, without installing the package system-wide (no service is
# started, nothing outside the cache changes): `apt-get download` the .deb into a
# temporary directory, unpack it with dpkg-deb -x, keep the named binaries.
#
#   scripts/ensure-deb-binary.sh PACKAGE PATH_IN_PACKAGE...
#   scripts/ensure-deb-binary.sh prometheus usr/bin/prometheus usr/bin/promtool
#
# The first path is the one that must exist and answer -v/--version. Idempotent: when
# it is there and runs, nothing else happens.
set -euo pipefail

package="${1:?usage: $0 PACKAGE PATH_IN_PACKAGE...}"
shift
(( $# > 0 )) || { echo "usage: $0 PACKAGE PATH_IN_PACKAGE..." >&2; exit 2; }
cache="${LLMCANARY_CACHE:-$HOME/.cache/llmcanary}"
dest="$cache/$package/bin"
main="$dest/$(basename "$1")"

log() { printf 'scripts/ensure-deb-binary.sh %s: %s\n' "$package" "$*" >&2; }
runs() { "$main" --version >/dev/null 2>&1 || "$main" -v >/dev/null 2>&1; }

if [[ -x "$main" ]] && runs; then
  exit 0
fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { log "$tool is not on PATH (a Debian-based system is needed)"; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt-get download writes into the current directory and, run as root, hands the
# download to the _apt user: let it write there.
chmod 0777 "$work"

download() { (cd "$work" && apt-get download -q "$package"); }

log "downloading Debian's $package package ($(apt-cache policy "$package" 2>/dev/null | awk '/Candidate:/ {print $2}'))"
if ! download; then
  log "download failed; refreshing the package lists (apt-get update) and retrying"
  if [[ "$(id -u)" -eq 0 ]]; then
    apt-get update -q
  else
    sudo -n apt-get update -q || { log "apt-get update needs root (or passwordless sudo)"; exit 1; }
  fi
  download
fi

deb="$(find "$work" -maxdepth 1 -name "${package}_*.deb" -print -quit)"
[[ -n "$deb" ]] || { log "apt-get download left no ${package}_*.deb"; exit 1; }
dpkg-deb -x "$deb" "$work/root"

mkdir -p "$dest"
for path in "$@"; do
  src="$work/root/$path"
  name="$(basename "$path")"
  if [[ -x "$src" ]]; then
    # Copy then rename: a concurrent run never sees a half-written binary.
    install -m 0755 "$src" "$dest/.$name.tmp"
    mv -f "$dest/.$name.tmp" "$dest/$name"
  elif [[ "$path" == "$1" ]]; then
    log "the package has no $path"; exit 1
  fi
done

runs || { log "$main does not run"; exit 1; }
log "$("$main" -v 2>&1 | head -n1) in $dest"
