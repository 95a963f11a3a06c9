#!/usr/bin/env bash
# Creates the benchmark's side venvs, idempotently:
#   benchmarks/.venv-anchor  the anchor: Replicate's coglet 0.23.1 with the cog 0.23.1 SDK
#   benchmarks/.venv-tools   matplotlib, for the plots (kept out of both servers' venvs)
#   benchmarks/.venv-queue-anchor  the pull-mode anchor: cog 0.6.1's Redis queue worker
#                            (`setup_anchor.sh queue` builds only this one)
# Re-running is a no-op once a venv's stamp file exists (delete the venv to rebuild it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/venv_lib.sh"

if [ "${1:-}" = "queue" ] || [ "${1:-}" = "all" ]; then
    # cog 0.6.1's pins need a newer pip than the venv's to resolve
    make_venv "$here/.venv-queue-anchor" "cog==0.6.1, the original queue worker" \
        '$PIP install --upgrade pip' \
        '$PIP install cog==0.6.1 pydantic==1.10.27 redis==4.6.0 requests==2.34.2 urllib3==2.8.0 \
            protobuf==3.20.3 opentelemetry-sdk==1.27.0 opentelemetry-exporter-otlp==1.27.0' \
        'cd / && "$venv/bin/python" -c "import cog.server.redis_queue; print(\"setup_anchor: cog\", __import__(\"cog\").__version__)" >&2'
    [ "${1:-}" = "queue" ] && exit 0
fi

# from / so that a coglet/ source directory in the cwd cannot shadow the installed one
make_venv "$here/.venv-anchor" "cog==0.23.1 coglet==0.23.1" \
    '$PIP install cog==0.23.1 coglet==0.23.1' \
    'cd / && "$venv/bin/python" -c "import coglet; print(\"setup_anchor: anchor coglet\", coglet.__version__)" >&2'

make_venv "$here/.venv-tools" "matplotlib" '$PIP install matplotlib'
