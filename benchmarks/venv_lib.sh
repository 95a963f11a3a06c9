# benchmarks/venv_lib.sh: sourced by setup_anchor.sh and setup_model.sh.
#
#   make_venv DIR "what it is" CMD...
#
# Creates the venv DIR once: when its stamp file DIR/.ok is missing, DIR is made again from
# scratch, then each CMD runs (a single shell string, with $venv set to DIR and $PIP to its
# pip with our flags); the stamp is written only when every one of them succeeded.
PYTHON="${PYTHON:-python3}"
PIP_FLAGS=(-q --disable-pip-version-check)

make_venv() {
    local dir="$1" what="$2"
    shift 2
    [ -f "$dir/.ok" ] && return 0
    echo "$(basename "$0" .sh): creating $dir ($what)" >&2
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    local venv="$dir" PIP="$dir/bin/pip ${PIP_FLAGS[*]}" step
    for step in "$@"; do
        venv="$venv" PIP="$PIP" bash -euo pipefail -c "$step"
    done
    touch "$dir/.ok"
}
