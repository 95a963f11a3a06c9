#!/usr/bin/env bash
# Creates the benchmark's side venvs, idempotently:
#   benchmarks/.venv-anchor  the anchor: Replicate's coglet 0.23.1 with the cog 0.23.1 SDK
#   benchmarks/.venv-tools   matplotlib, for the plots (kept out of both servers' venvs)
#   benchmarks/.venv-queue-anchor  the pull-mode anchor: cog 0.6.1's Redis queue worker
#                            (`setup_anchor.sh queue` builds only this one)
# Re-running is a no-op once a venv's stamp file exists (delete the venv to rebuild it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
PIP_FLAGS=(-q --disable-pip-version-check)

queue_anchor="$here/.venv-queue-anchor"
if [ "${1:-}" = "queue" ] || [ "${1:-}" = "all" ]; then
    if [ ! -f "$queue_anchor/.ok" ]; then
        echo "setup_anchor: creating $queue_anchor (cog==0.6.1, the original queue worker)" >&2
        rm -rf "$queue_anchor"
        "$PYTHON" -m venv "$queue_anchor"
        # cog 0.6.1's pins need a newer pip than the venv's to resolve
        "$queue_anchor/bin/pip" install "${PIP_FLAGS[@]}" --upgrade pip
        "$queue_anchor/bin/pip" install "${PIP_FLAGS[@]}" cog==0.6.1 pydantic==1.10.27 redis==4.6.0 \
            requests==2.34.2 urllib3==2.8.0 protobuf==3.20.3 opentelemetry-sdk==1.27.0 \
            opentelemetry-exporter-otlp==1.27.0
        (cd / && "$queue_anchor/bin/python" -c 'import cog.server.redis_queue; print("setup_anchor: cog", __import__("cog").__version__)') >&2
        touch "$queue_anchor/.ok"
    fi
    [ "${1:-}" = "queue" ] && exit 0
fi

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
