#!/usr/bin/env bash
# Build the operator's virtual environment: the one install path of the operator image.
#
#   scripts/build-operator-venv.sh [--no-cache] DEST
#
# Builds the llmcanary wheel from this checkout (pip wheel --no-deps, in a scratch copy so the
# checkout is never written to), creates a virtual environment at DEST with $PYTHON (default
# python3), installs the wheel WITHOUT extras (so none of the `model` extra: no torch,
# tritonclient, pytriton, matplotlib) and nothing of the development stack (the llmcanary-dev
# distribution in dev/ is neither copied nor installed), and then checks the result: those
# packages are not importable (nor llmcanary_dev, rich, cryptography), llmcanary is imported
# from DEST, `llmcanary run --help` works and `llmcanary --help` offers no development command
# (devcluster, stack, demo, bench).
#
# The Dockerfile's builder stage runs exactly this script (with --no-cache), and
# tests/integration/test_image_steps.py runs it too, so the test exercises the image's steps.
# Needs PyPI (or a configured index) for the dependencies and for setuptools in pip's
# isolated build environment.
set -euo pipefail

usage() { echo "usage: $0 [--no-cache] DEST" >&2; exit 2; }

pip_cache=()
if [[ "${1:-}" == "--no-cache" ]]; then
  pip_cache=(--no-cache-dir)
  shift
fi
[[ $# -eq 1 ]] || usage
dest=$1
python=${PYTHON:-python3}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ -e "$dest" && -n "$(ls -A "$dest" 2>/dev/null)" ]]; then
  echo "error: $dest exists and is not empty; pass a new or empty directory" >&2
  exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Only what the wheel is built from (pyproject's readme and the package); no caches, no dev/.
mkdir -p "$scratch/src"
cp "$src/pyproject.toml" "$src/README.md" "$scratch/src/"
cp -R "$src/operator" "$scratch/src/operator"
find "$scratch/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

echo "==> virtual environment at $dest ($("$python" --version))"
"$python" -m venv "$dest"
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "==> wheel (pip wheel --no-deps; setuptools from the index)"
"$dest/bin/python" -m pip wheel --quiet "${pip_cache[@]}" --no-deps \
  --wheel-dir "$scratch/wheels" "$scratch/src"
wheels=("$scratch"/wheels/llmcanary-*.whl)
[[ -f "${wheels[0]}" ]] || { echo "error: pip wheel produced no llmcanary wheel" >&2; exit 1; }

echo "==> install ${wheels[0]##*/} and its dependencies (no extras)"
"$dest/bin/python" -m pip install --quiet "${pip_cache[@]}" "${wheels[0]}"

echo "==> check"
# The model extra's packages must be absent; llmcanary must come from DEST, not a checkout.
# -I: isolated mode, so neither PYTHONPATH nor the current directory can leak in.
"$dest/bin/python" -I - "$dest" <<'EOF'
import importlib.util
import pathlib
import sys

dest = pathlib.Path(sys.argv[1]).resolve()
present = [m for m in ("torch", "tritonclient", "pytriton", "matplotlib")
           if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"error: the operator venv must not contain {', '.join(present)}")
# The development stack (llmcanary-dev) and what only it uses.
present = [m for m in ("llmcanary_dev", "rich", "cryptography")
           if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"error: the operator venv must not contain {', '.join(present)} (dev/)")
import llmcanary
where = pathlib.Path(llmcanary.__file__).resolve()
if dest not in where.parents:
    sys.exit(f"error: llmcanary imported from {where}, not from {dest}")
EOF
env -u PYTHONPATH "$dest/bin/llmcanary" run --help >/dev/null
help=$(env -u PYTHONPATH "$dest/bin/llmcanary" --help)
for command in devcluster stack demo bench; do
  if grep -qE "^  $command( |\$)" <<<"$help"; then
    echo "error: llmcanary --help offers $command, a development command (dev/)" >&2
    exit 1
  fi
done
echo "==> ok: $("$dest/bin/llmcanary" --version) in $dest"
