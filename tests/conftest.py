"""Shared fixtures: every test starts the real server (and so the real worker) as a
subprocess on port 0, reads the port back from its log, and talks real HTTP."""

import json
import os
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


class Server:
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
        self.lines = []
        self._cond = threading.Condition()
        self.port = None
        threading.Thread(target=self._pump, args=(self.proc.stderr,), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.time() + 30 * SLOW
        with self._cond:
            while self.port is None:
                if self.proc.poll() is not None and not self._has_port():
                    raise RuntimeError("server exited early:\n" + self.log_text())
                left = deadline - time.time()
                if left <= 0:
                    raise RuntimeError("server never printed its port:\n" + self.log_text())
                self._cond.wait(min(left, 0.2))
        self.url = "http://127.0.0.1:%d" % self.port
        self.session = requests.Session()

    def _has_port(self):
        return self.port is not None

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                m = PORT_RE.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                self._cond.notify_all()

    def log_text(self):
        with self._cond:
            return "\n".join(self.lines)

    def messages(self):
        """The `message` of every JSON log line."""
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line)["fields"]["message"])
            except (ValueError, KeyError, TypeError):
                out.append(line)
        return out

    def wait_log(self, pattern, timeout=10):
        rx = re.compile(pattern)
        deadline = time.time() + timeout * SLOW
        with self._cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("log never matched %r:\n%s" % (pattern, "\n".join(self.lines)))
                self._cond.wait(min(left, 0.2))

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
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # the worker shares the session: make sure nothing outlives the test
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        return self.proc.returncode


@pytest.fixture
def make_server(tmp_path):
    """make_server(code=None, ref="predict.py:Predictor", env=None, args=(), files=None)."""
    started = []

    def make(code=None, ref="predict.py:Predictor", env=None, args=(), files=None, cwd=None,
             launcher=None, ready=True):
        where = cwd or tmp_path
        if code is not None:
            (tmp_path / "predict.py").write_text(textwrap.dedent(code))
        for name, content in (files or {}).items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(content) if isinstance(content, str) else json.dumps(content))
        argv = ([ref] if ref else []) + list(args)
        srv = Server(where, argv, env=env, launcher=launcher)
        started.append(srv)
        if ready:
            srv.wait_status("READY", "SETUP_FAILED")
        return srv

    yield make
    for srv in started:
        srv.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
