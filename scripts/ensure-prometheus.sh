#!/usr/bin/env bash
# Puts Debian's prometheus (and promtool) binaries under $LLMCANARY_CACHE/prometheus/bin
# for the tests and the local stack, without installing the package system-wide:
# `apt-get download` the .deb into a temporary directory, unpack it with dpkg-deb -x,
# keep the two binaries. Called by `make prometheus-bin` (a prerequisite of test,
# integration and demo).
#
# Idempotent: when the binary is there and answers --version, nothing else runs.
set -euo pipefail

cache="${LLMCANARY_CACHE:-$HOME/.cache/llmcanary}"
dest="$cache/prometheus/bin"
prom="$dest/prometheus"

log() { printf 'scripts/ensure-prometheus.sh: %s\n' "$*" >&2; }

if [[ -x "$prom" ]] && "$prom" --version >/dev/null 2>&1; then
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

download() { (cd "$work" && apt-get download -q prometheus); }

log "downloading Debian's prometheus package ($(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}'))"
if ! download; then
  log "download failed; refreshing the package lists (apt-get update) and retrying"
  if [[ "$(id -u)" -eq 0 ]]; then
    apt-get update -q
  else
    sudo -n apt-get update -q || { log "apt-get update needs root (or passwordless sudo)"; exit 1; }
  fi
  download
fi

deb="$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)"
[[ -n "$deb" ]] || { log "apt-get download left no prometheus_*.deb"; exit 1; }
dpkg-deb -x "$deb" "$work/root"

mkdir -p "$dest"
for tool in prometheus promtool; do
  src="$work/root/usr/bin/$tool"
  if [[ -x "$src" ]]; then
    # Copy then rename: a concurrent run never sees a half-written binary.
    install -m 0755 "$src" "$dest/.$tool.tmp"
    mv -f "$dest/.$tool.tmp" "$dest/$tool"
  elif [[ "$tool" == prometheus ]]; then
    log "the package has no usr/bin/prometheus"; exit 1
  fi
done

"$prom" --version >/dev/null 2>&1 || { log "$prom does not run"; exit 1; }
log "$("$prom" --version 2>&1 | head -n1) in $dest"
