#!/usr/bin/env bash
# Creates the benchmark's side venvs, idempotently:
#   benchmarks/.venv-anchor  the anchor: Replicate's coglet 0.23.1 with the cog 0.23.1 SDK
#   benchmarks/.venv-tools   matplotlib, for the plots (kept out of both servers' venvs)
# Re-running is a no-op once a venv's stamp file exists (delete the venv to rebuild it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
PIP_FLAGS=(-q --disable-pip-version-check)

anchor="$here/.venv-anchor"
if [ ! -f "$anchor/.ok" ]; then
    echo "setup_anchor: creating $anchor (cog==0.23.1 coglet==0.23.1)" >&2
    rm -rf "$anchor"
    "$PYTHON" -m venv "$anchor"
    "$anchor/bin/pip" install "${PIP_FLAGS[@]}" cog==0.23.1 coglet==0.23.1
    # from / so that a coglet/ source directory in the cwd cannot shadow the installed one
    (cd / && "$anchor/bin/python" -c 'import coglet; print("setup_anchor: anchor coglet", coglet.__version__)') >&2
    touch "$anchor/.ok"
fi

tools="$here/.venv-tools"
if [ ! -f "$tools/.ok" ]; then
    echo "setup_anchor: creating $tools (matplotlib)" >&2
    rm -rf "$tools"
    "$PYTHON" -m venv "$tools"
    "$tools/bin/pip" install "${PIP_FLAGS[@]}" matplotlib
    touch "$tools/.ok"
fi
