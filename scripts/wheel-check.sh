#!/usr/bin/env bash
# `make wheel-check` (as root; minutes; not part of CI): proves dist/'s wheel where none of its
# libraries are installed.
#   - the sdist, pip-installed into a fresh venv on this machine (which has the -dev packages),
#     imports;
#   - for each suite in WHEEL_CHECK_SUITES (bookworm: Python 3.11, trixie: 3.13), a Debian
#     tree made by `debootstrap --variant=minbase` with python3 and python3-venv only, cached
#     in WHEEL_CHECK_DIR (.wheel-check/): in a chroot there, a venv with the wheel and the cog
#     SDK, and the driver below: ldd of the extension and the curl shim names nothing outside
#     the wheel but glibc; the tree has no libuv, jansson or libcurl; a sync prediction; an
#     async one whose webhooks reach a local receiver (and libcurl is mapped only from then
#     on, from the wheel); a file output uploaded with --upload-url; python -m cog.server.http;
#   - the same driver on this machine's other CPythons (WHEEL_CHECK_HOST_PYTHONS, those found),
#     for the abi3 claim on 3.10 and 3.12 (these have the libraries; ldd still shows the wheel's).
# The Debian mirror is the one this machine's apt uses; pip's configuration (index mirrors,
# find-links, certificates, constraints) is carried into the trees. Everything talks to 127.0.0.1.
# Usage: scripts/wheel-check.sh [WHEEL]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${WHEEL_CHECK_DIR:-$ROOT/.wheel-check}
SUITES=${WHEEL_CHECK_SUITES:-bookworm trixie}
HOST_PYTHONS=${WHEEL_CHECK_HOST_PYTHONS-python3.10 python3.12} # empty: none
COG_SDK=${COG_SDK:-cog==0.23.1}
SDK_DEPS="structlog pyyaml typing_extensions requests"
PY=${PYTHON:-python3}

die() { echo "wheel-check: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

wheel=${1:-$(ls -t dist/coglet-*-cp310-abi3-manylinux_*.whl 2>/dev/null | head -1)}
[ -f "$wheel" ] || die "no wheel in dist/: make wheel"
wheel=$(readlink -f "$wheel")
sdist=$(ls -t dist/coglet-*.tar.gz 2>/dev/null | head -1)
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount)"
command -v debootstrap >/dev/null || die "no debootstrap: scripts/install-deps.sh wheel-check"

# ---- mounts: every one recorded, all undone on exit, newest first ----
MOUNTS=()
unmount_all() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true
  done
  MOUNTS=()
}
trap unmount_all EXIT
trap 'exit 130' INT TERM
mnt() { mount "$@" && MOUNTS+=("${*: -1}"); }
# true when something is mounted at or under $1 (a tree is never deleted then)
mounted_under() { awk -v p="$1" '$2 == p || index($2, p "/") == 1 { f = 1 } END { exit !f }' /proc/mounts; }

# ---- this machine's Debian mirror, from its apt configuration ----
mirror() {
  [ -n "${WHEEL_CHECK_MIRROR:-}" ] && { echo "$WHEEL_CHECK_MIRROR"; return; }
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  # deb822 sources: the URIs of the stanza whose Suites name this release
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$codename" '
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*$/ { if (ok && u && !done) { print u; done = 1 } ok = 0; u = ""; next }
    tolower($1) == "uris:" { u = $2 }
    tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
    END { if (ok && u && !done) print u }')
  # one-line sources: deb [options] URI SUITE ...
  [ -z "$uri" ] && uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -E 's/\[[^]]*\]//' | awk -v s="$codename" '$1 == "deb" && $3 == s { print $2; exit }')
  [ -n "$uri" ] || die "no Debian mirror in /etc/apt (set WHEEL_CHECK_MIRROR)"
  echo "$uri"
}

# ---- pip's configuration, carried into a tree ----
# `pip config list` shows what this machine's pip uses (files and PIP_* variables); it becomes
# the tree's /etc/pip.conf, PIP_* values overriding the files' as they do here. Local paths in
# it (find-links, file:// indexes, the certificate bundle, constraints) are copied (files) or
# bound read-only (directories) to the same place in the tree, a local index with its parent.
share_pip_config() {
  local tree=$1 p
  while IFS= read -r p; do
    if [ -d "$p" ]; then
      mkdir -p "$tree$p"
      mnt --bind "$p" "$tree$p"
      mount -o remount,bind,ro "$tree$p"
    elif [ -f "$p" ]; then
      mkdir -p "$(dirname "$tree$p")"
      cp "$p" "$tree$p"
    fi
  done < <("$PY" - "$tree/etc/pip.conf" <<'EOF'
import configparser, re, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
files, env = {}, {}
for line in out.splitlines():
    m = re.match(r"^([^.=]*)\.([^=]+)='(.*)'$", line)
    if not m:
        continue
    section, key, value = m.groups()
    if section == ":env:":
        env[key] = value
    else:
        files.setdefault(section, {})[key] = value
files.setdefault("global", {}).update(env)
conf = configparser.RawConfigParser()
paths = set()
for section, items in files.items():
    conf.add_section(section)
    for key, value in items.items():
        conf.set(section, key, value)
        for tok in value.split():
            tok = tok[len("file://"):] if tok.startswith("file://") else tok
            if tok.startswith("/"):
                tok = tok.rstrip("/")
                paths.add(tok)
                # a local index's pages often link to files beside it (../../files/x.whl)
                if "index" in key and tok.count("/") >= 2:
                    paths.add(tok.rsplit("/", 1)[0])
with open(sys.argv[1], "w") as f:
    conf.write(f)
kept = []
for p in sorted(paths):  # a directory shared covers what lies under it
    if not any(p.startswith(q + "/") for q in kept):
        kept.append(p)
print("\n".join(kept))
EOF
)
}

# ---- the trees ----
make_tree() {
  local suite=$1 tree=$CACHE/$1
  [ -e "$tree/.wheel-check-complete" ] && return 0
  mounted_under "$tree" && die "$tree has mounts; not touching it"
  rm -rf "$tree"
  mkdir -p "$CACHE"
  step "debootstrap $suite (minbase + python3 python3-venv) from $MIRROR, once; log: $CACHE/$suite.log"
  debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$tree" "$MIRROR" \
    >"$CACHE/$suite.log" 2>&1 || { tail -20 "$CACHE/$suite.log"; die "debootstrap $suite failed"; }
  rm -f "$tree"/var/cache/apt/archives/*.deb
  touch "$tree/.wheel-check-complete"
}

# /proc, a /dev of its own (the machine's is never bound in), a fresh /tmp, DNS, pip.
enter_tree() {
  local tree=$1 name major minor
  mnt -t proc proc "$tree/proc"
  mnt -t tmpfs -o mode=755,size=1m wheel-check-dev "$tree/dev"
  while read -r name major minor; do
    mknod -m 666 "$tree/dev/$name" c "$major" "$minor"
  done <<'NODES'
null 1 3
zero 1 5
full 1 7
random 1 8
urandom 1 9
tty 5 0
NODES
  ln -s /proc/self/fd "$tree/dev/fd"
  ln -s /proc/self/fd/0 "$tree/dev/stdin"
  ln -s /proc/self/fd/1 "$tree/dev/stdout"
  ln -s /proc/self/fd/2 "$tree/dev/stderr"
  mkdir "$tree/dev/shm"
  mnt -t tmpfs -o mode=1777 wheel-check-shm "$tree/dev/shm"
  mnt -t tmpfs -o mode=1777 wheel-check-tmp "$tree/tmp"
  cp --remove-destination /etc/resolv.conf "$tree/etc/resolv.conf"
  share_pip_config "$tree"
}

in_tree() {
  local tree=$1
  shift
  env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    chroot "$tree" "$@"
}

DRIVER=$CACHE/driver.py
write_driver() {
  mkdir -p "$CACHE"
  cat >"$DRIVER" <<'EOF'
"""wheel-check's driver: run by a Python that has the wheel and the cog SDK installed."""
import atexit
import http.server
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import coglet

GLIBC = re.compile(r"^(libc|libm|libdl|librt|libpthread|libresolv|libutil|libanl|libmvec)\.so\.\d+$"
                   r"|^ld-linux-x86-64\.so\.2$|^linux-vdso\.so\.1$")
PORT_RE = re.compile(r"Starting coglet server on [\d.]+:(\d+)")
PKG = os.path.dirname(os.path.realpath(coglet.__file__))
LIBS = os.path.realpath(os.path.join(PKG, "..", "coglet.libs"))
WORK = tempfile.mkdtemp(prefix="wheel-check-")
CHECKS = []


def ok(cond, what, detail=""):
    if not cond:
        print("FAIL: %s\n%s" % (what, detail), flush=True)
        sys.exit(1)
    CHECKS.append(what)
    print("ok: " + what, flush=True)


def check_install(library_free):
    print("Python %s, coglet %s in %s" % (sys.version.split()[0], coglet.__version__, PKG), flush=True)
    ok(not importlib.metadata.requires("coglet"), "the wheel declares no runtime dependencies")
    ok(all(os.path.exists(os.path.join(PKG, f)) for f in ("py.typed", "__init__.pyi", "_sdk.pyi")),
       "py.typed and the .pyi stubs are installed")
    for so in ("_impl.abi3.so", "_curl_shim.abi3.so"):
        out = subprocess.run(["ldd", os.path.join(PKG, so)], capture_output=True, text=True, check=True).stdout
        names, bad = [], []
        for line in out.splitlines():
            name, _, rest = line.strip().partition(" => ")
            path = rest.split(" (")[0] if rest else name.split(" (")[0]
            names.append(os.path.basename(path))
            inside = os.path.realpath(path).startswith(LIBS + os.sep)
            if "not found" in rest or not (inside or GLIBC.match(os.path.basename(path))):
                bad.append(line.strip())
        ok(not bad, "ldd %s: %d libraries, each glibc's or the wheel's (%s)" % (so, len(names), " ".join(names)),
           "outside the wheel:\n" + "\n".join(bad))
    if library_free:
        found = []
        for top in ("/usr/lib", "/usr/local/lib", "/lib"):
            for d, dirs, files in os.walk(top):
                dirs[:] = [x for x in dirs if not x.startswith("python") and x not in ("site-packages", "dist-packages")]
                found += [os.path.join(d, f) for f in files if re.match(r"lib(uv|jansson|curl)\.so", f)]
        ok(not found, "this system has no libuv, jansson or libcurl", "\n".join(found))


class Receiver(http.server.ThreadingHTTPServer):
    """Webhooks (POST, JSON) and uploads (PUT) on 127.0.0.1, recorded."""
    daemon_threads = True

    def __init__(self):
        self.hits = []
        self.cond = threading.Condition()
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def wait(self, pred, what, timeout=30):
        deadline = time.time() + timeout
        with self.cond:
            while not any(pred(h) for h in self.hits):
                if time.time() > deadline:
                    ok(False, what, repr(self.hits))
                self.cond.wait(0.2)
            return [h for h in self.hits if pred(h)][0]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.cond:
            self.server.hits.append((self.command, self.path, body))
            self.server.cond.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST


PREDICT = '''
from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, text: str = Input(description="who to greet")) -> str:
        print("greeting", text)
        return "hello " + text
'''
FILES = '''
import tempfile

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self, text: str) -> Path:
        out = Path(tempfile.mkdtemp()) / "greeting.txt"
        out.write_text("hello " + text + "\\n")
        return out
'''


RUNNING = []


@atexit.register
def kill_leftovers():  # a failed check leaves no server (or worker) behind
    for proc in RUNNING:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


class Server:
    def __init__(self, argv, env=None):
        self.lines, self.port = [], None
        self.proc = subprocess.Popen(argv, cwd=WORK, env=dict(os.environ, **(env or {})),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        RUNNING.append(self.proc)
        threading.Thread(target=self.pump, daemon=True).start()
        deadline = time.time() + 60
        while self.port is None:
            if self.proc.poll() is not None or time.time() > deadline:
                ok(False, "%s starts" % " ".join(argv[1:3]), "\n".join(self.lines))
            time.sleep(0.1)
        self.url = "http://127.0.0.1:%d" % self.port
        while self.request("GET", "/health-check")[1].get("status") != "READY":
            if time.time() > deadline:
                ok(False, "setup done", "\n".join(self.lines))
            time.sleep(0.2)

    def pump(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            m = PORT_RE.search(line)
            if m and self.port is None:
                self.port = int(m.group(1))

    def request(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")

    def maps(self):
        with open("/proc/%d/maps" % self.proc.pid) as f:
            return f.read()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        ok(self.proc.wait(timeout=30) == 0, "server shut down cleanly on SIGTERM", "\n".join(self.lines))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    check_install(library_free="--library-free" in sys.argv)
    with open(os.path.join(WORK, "predict.py"), "w") as f:
        f.write(PREDICT)
    with open(os.path.join(WORK, "files.py"), "w") as f:
        f.write(FILES)
    rx = Receiver()
    py = sys.executable

    s = Server([py, "-m", "coglet", "predict.py:Predictor", "--host", "127.0.0.1", "--port", "0"])
    status, body = s.request("POST", "/predictions", {"input": {"text": "sync"}})
    ok(status == 200 and body.get("status") == "succeeded" and body.get("output") == "hello sync",
       "sync prediction", repr(body))
    ok("libcurl" not in s.maps(), "no libcurl mapped before the first webhook")
    status, body = s.request("POST", "/predictions", {"id": "wheel-check-async", "input": {"text": "async"},
                                                      "webhook": rx.url + "/hook"},
                             headers={"Prefer": "respond-async"})
    ok(status == 202, "async prediction accepted", repr(body))
    hit = rx.wait(lambda h: h[0] == "POST" and json.loads(h[2] or b"{}").get("status") == "succeeded",
                  "the completed webhook reached the receiver")
    done = json.loads(hit[2])
    ok(done["id"] == "wheel-check-async" and done["output"] == "hello async", "async prediction's webhook",
       repr(done))
    curl = [line.split()[-1] for line in s.maps().splitlines() if "libcurl" in line]
    ok(curl and all(os.path.realpath(p).startswith(LIBS + os.sep) for p in curl),
       "libcurl loaded on the first webhook, from the wheel", "\n".join(sorted(set(curl))))
    s.stop()

    s = Server([py, "-m", "coglet", "files.py:Predictor", "--host", "127.0.0.1", "--port", "0",
                "--upload-url", rx.url + "/uploads"])
    status, body = s.request("POST", "/predictions", {"input": {"text": "upload"}})
    ok(status == 200 and body.get("output") == rx.url + "/uploads/greeting.txt", "file output uploaded",
       repr(body) + "\n" + "\n".join(s.lines))
    put = rx.wait(lambda h: h[0] == "PUT", "the upload reached the target")
    ok(put[1] == "/uploads/greeting.txt" and put[2] == b"hello upload\n", "uploaded bytes", repr(put))
    s.stop()

    port = free_port()
    s = Server([py, "-m", "cog.server.http", "--host", "127.0.0.1"],
               env={"COG_PREDICT_TYPE_STUB": "predict.py:Predictor", "PORT": str(port)})
    status, body = s.request("POST", "/predictions", {"input": {"text": "cog"}})
    ok(s.port == port and status == 200 and body.get("output") == "hello cog", "python -m cog.server.http",
       repr(body))
    s.stop()
    print("wheel-check: %d checks passed on Python %s" % (len(CHECKS), sys.version.split()[0]), flush=True)


main()
EOF
}

check_tree() {
  local suite=$1 tree=$CACHE/$1 venv=/tmp/venv
  make_tree "$suite"
  step "$suite: the wheel in a chroot without its libraries"
  enter_tree "$tree"
  cp "$wheel" "$DRIVER" "$tree/tmp/"
  in_tree "$tree" python3 -m venv "$venv"
  in_tree "$tree" "$venv/bin/pip" install -q "/tmp/$(basename "$wheel")"
  in_tree "$tree" "$venv/bin/pip" install -q --no-deps "$COG_SDK"
  # shellcheck disable=SC2086
  in_tree "$tree" "$venv/bin/pip" install -q $SDK_DEPS
  in_tree "$tree" "$venv/bin/python" /tmp/driver.py --library-free
  unmount_all
}

# PATH's python3.X, else one pyenv keeps without putting it on PATH
find_python() {
  local p
  for p in "$(command -v "$1" 2>/dev/null)" "$(ls -d "$(pyenv root 2>/dev/null)"/versions/*/bin/"$1" 2>/dev/null | head -1)"; do
    [ -n "$p" ] && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null && { echo "$p"; return; }
  done
}

check_host_python() { # name path
  local python=$2 venv=$CACHE/host-$1
  step "$1 on this machine ($python)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q "$wheel"
  "$venv/bin/pip" install -q --no-deps "$COG_SDK"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q $SDK_DEPS
  (cd / && "$venv/bin/python" "$DRIVER")
}

check_sdist() {
  [ -n "$sdist" ] || die "no sdist in dist/: make wheel"
  local venv=$CACHE/sdist-venv
  step "the sdist $(basename "$sdist"), pip-installed into a fresh venv"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q "$sdist"
  (cd / && "$venv/bin/python" -c 'import coglet, coglet._impl, os
d = os.path.dirname(coglet._impl.__file__)
assert os.path.exists(os.path.join(d, "_curl_shim.abi3.so")), os.listdir(d)
print("ok: the sdist builds and imports: coglet", coglet.__version__, "from", coglet._impl.__file__)')
}

MIRROR=$(mirror)
echo "wheel: $wheel"
write_driver
check_sdist
for suite in $SUITES; do check_tree "$suite"; done
ran=$SUITES
for name in $HOST_PYTHONS; do
  python=$(find_python "$name")
  if [ -z "$python" ]; then
    echo "(no $name here: skipped)"
    continue
  fi
  check_host_python "$name" "$python"
  ran+=" $name"
done
step "wheel-check passed: $(basename "$wheel") on ${ran// /, }"
