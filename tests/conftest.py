"""Shared fixtures: every test starts the real server (and so the real worker) as a
subprocess on port 0, reads the port back from its log, and talks real HTTP."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

PORT_RE = re.compile(r"Starting coglet server on [\d.]+:(\d+)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
SANITIZED = bool(os.environ.get("COGLET_TEST_SANITIZED"))
# Sanitized builds are slower; every wait stretches with them.
SLOW = 3.0 if SANITIZED else 1.0

# Predictor source for predictors that wait on the test: a predictor text starts with it and
# calls hold(gate, started), which touches the file `started` (when given), then waits for
# the file `gate` to exist (when given), up to 30 s.
HOLD = """
import os
import time


def hold(gate, started):
    if started:
        open(started, "w").close()
    deadline = time.time() + 30
    while gate and not os.path.exists(gate):
        if time.time() > deadline:
            raise RuntimeError("gate never opened")
        time.sleep(0.01)
"""


class LoggedProcess:
    """A child process whose stdout and stderr lines are collected as they come (`lines`,
    guarded by `_cond`), for waiting on them. Subclasses start `proc` and call
    `_collect()`; `_on_line(line)` sees each line under the lock."""

    def _collect(self):
        self.lines = []
        self._cond = threading.Condition()
        self._pumps_open = 2
        for stream in (self.proc.stderr, self.proc.stdout):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _on_line(self, line):
        pass

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._on_line(line)
                self._cond.notify_all()
        with self._cond:
            self._pumps_open -= 1
            self._cond.notify_all()

    def _finished(self):
        """The process has exited and both its streams are read to the end: no line will come."""
        return self._pumps_open == 0 and self.proc.poll() is not None

    def log_text(self):
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """`sig`, then SIGKILL to the whole session (a worker shares it: nothing outlives the
        test) once the process has exited or `timeout` passed; its return code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()
        return self.proc.returncode

    def wait_log(self, pattern, timeout=10):
        """The first line matching pattern; fails at the timeout, or as soon as the process
        has ended without writing one."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout * SLOW
        with self._cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                if self._finished():
                    raise AssertionError("process exited (%s) before logging %r:\n%s" % (
                        self.proc.returncode, pattern, "\n".join(self.lines)))
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("log never matched %r:\n%s" % (pattern, "\n".join(self.lines)))
                self._cond.wait(min(left, 0.2))


class Server(LoggedProcess):
    """A running `python -m coglet` process."""

    def __init__(self, cwd, args, env=None, launcher=None):
        self.cwd = str(cwd)
        full_env = dict(os.environ)
        full_env.setdefault("COG_LOG_LEVEL", "info")
        full_env.pop("LOG_FORMAT", None)
        if env:
            full_env.update({k: v for k, v in env.items() if v is not None})
            for k, v in env.items():
                if v is None:
                    full_env.pop(k, None)
        cmd = launcher or [sys.executable, "-m", "coglet", *args, "--port", "0", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.port = None
        self._collect()
        deadline = time.time() + 30 * SLOW
        with self._cond:
            while self.port is None:
                if self.proc.poll() is not None and not self._has_port():
                    self._cond.release()
                    try:
                        time.sleep(0.2)  # let the pumps collect the last lines
                    finally:
                        self._cond.acquire()
                    raise RuntimeError("server exited early:\n" + "\n".join(self.lines))
                left = deadline - time.time()
                if left <= 0:
                    self._cond.release()
                    try:
                        self.stop(signal.SIGKILL)
                    finally:
                        self._cond.acquire()
                    raise RuntimeError("server never printed its port:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))
        self.url = "http://127.0.0.1:%d" % self.port
        self.session = requests.Session()

    def _has_port(self):
        return self.port is not None

    def _on_line(self, line):
        m = PORT_RE.search(line)
        if m and self.port is None:
            self.port = int(m.group(1))

    def messages(self):
        """The `message` of every JSON log line."""
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line)["fields"]["message"])
            except (ValueError, KeyError, TypeError):
                out.append(line)
        return out

    def get(self, path, **kw):
        kw.setdefault("timeout", 30 * SLOW)
        return self.session.get(self.url + path, **kw)

    def post(self, path, json_body=None, **kw):
        kw.setdefault("timeout", 60 * SLOW)
        if json_body is not None:
            kw["json"] = json_body
        return self.session.post(self.url + path, **kw)

    def put(self, path, json_body=None, **kw):
        kw.setdefault("timeout", 60 * SLOW)
        if json_body is not None:
            kw["json"] = json_body
        return self.session.put(self.url + path, **kw)

    def health(self):
        return self.get("/health-check").json()

    def wait_status(self, *statuses, timeout=30):
        deadline = time.time() + timeout * SLOW
        last = None
        while time.time() < deadline:
            last = self.health()
            if last["status"] in statuses:
                return last
            time.sleep(0.05)
        raise AssertionError("health never reached %s; last %r\n%s" % (statuses, last, self.log_text()))

    def predict(self, input=None, **kw):
        body = {} if input is None else {"input": input}
        return self.post("/predictions", body, **kw)

    def worker_pids(self):
        """Live (non-zombie) children of the server process. Reads /proc rather than running
        pgrep: under LD_PRELOAD=libasan (make test-asan) pgrep can hang."""
        return child_pids(self.proc.pid)



def launch(where, code=None, ref="predict.py:Predictor", env=None, args=(), files=None, cwd=None,
           launcher=None, ready=True):
    """Write predict.py (`code`) and `files` into the directory `where`, start the server
    there (or in `cwd`) and, unless ready=False, wait for READY or SETUP_FAILED."""
    where = pathlib.Path(where)
    if code is not None:
        (where / "predict.py").write_text(textwrap.dedent(code))
    for name, content in (files or {}).items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content) if isinstance(content, str) else json.dumps(content))
    argv = ([ref] if ref else []) + list(args)
    srv = Server(cwd or where, argv, env=env, launcher=launcher)
    if ready:
        try:
            srv.wait_status("READY", "SETUP_FAILED")
        except BaseException:
            srv.stop()
            raise
    return srv


def child_pids(ppid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[1] the parent pid
        if int(fields[1]) == ppid and fields[0] not in ("Z", "X"):
            out.append(int(name))
    return sorted(out)


@pytest.fixture
def make_server(tmp_path):
    """make_server(code=None, ref="predict.py:Predictor", env=None, args=(), files=None)."""
    started = []

    def make(code=None, ref="predict.py:Predictor", env=None, args=(), files=None, cwd=None,
             launcher=None, ready=True):
        srv = launch(tmp_path, code=code, ref=ref, env=env, args=args, files=files, cwd=cwd,
                     launcher=launcher, ready=ready)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory):
    """Like make_server, but the servers live until the end of the test module (share one
    server between the tests that need the same predictor). Each call gets its own dir."""
    started = []

    def make(code=None, ref="predict.py:Predictor", env=None, args=(), files=None, launcher=None,
             ready=True):
        where = tmp_path_factory.mktemp("srv")
        srv = launch(where, code=code, ref=ref, env=env, args=args, files=files, launcher=launcher,
                     ready=ready)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- raw HTTP/1.1 over a socket (pipelining, chunked bodies, Expect, HEAD, huge lengths) ----


class RawResponse:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # dict, lower-case names (last value wins)
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "RawResponse(%d %s, %r, %r)" % (self.status, self.reason, self.headers, self.body[:300])


class RawConn:
    """One TCP connection; send() raw bytes, read_response() parses one response."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed; unread: %r" % self.buf)
        self.buf += chunk

    def read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", head
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        return int(status), reason, headers

    def read_response(self, head_request=False):
        status, reason, headers = self.read_head()
        body = b""
        if head_request or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                body += self.read_exact(size)
                self.read_exact(2)
        elif "content-length" in headers:
            body = self.read_exact(int(headers["content-length"]))
        else:
            while True:
                try:
                    self._fill()
                except ConnectionError:
                    break
            body, self.buf = self.buf, b""
        return RawResponse(status, reason, headers, body)


def raw_request(method, path, body=None, headers=None):
    """Bytes of one HTTP/1.1 request (Content-Length added when there is a body)."""
    hdrs = {"Host": "127.0.0.1"}
    hdrs.update(headers or {})
    if body is not None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        hdrs.setdefault("Content-Length", str(len(body)))
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n"
    return head.encode("latin-1") + (body or b"")
