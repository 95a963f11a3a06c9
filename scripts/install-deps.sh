#!/usr/bin/env bash
# Installs the Debian packages coglet builds and tests with, when any is missing.
set -euo pipefail
pkgs=(build-essential pkg-config libuv1-dev libjansson-dev libcurl4-openssl-dev node-llhttp libpcre2-dev python3-venv
      libhiredis-dev redis-server)
# `install-deps.sh bench`: also what `make bench` measures with
[ "${1:-}" = "bench" ] && pkgs+=(wrk)
# `install-deps.sh fuzz`: clang, and its libFuzzer and sanitizer runtimes (LeakSanitizer
# included), which Debian's clang does not depend on
[ "${1:-}" = "fuzz" ] && pkgs+=(clang libclang-rt-14-dev)
# `install-deps.sh wheel-check`: what `make wheel-check` builds its Debian trees with
[ "${1:-}" = "wheel-check" ] && pkgs+=(debootstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
