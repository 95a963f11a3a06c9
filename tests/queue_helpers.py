"""Pull-mode test helpers: a real redis-server of the test's own on a free loopback port
(no persistence), coglet consumers started as `python -m coglet ... --redis-url`, and a
producer that puts messages on the stream the way a platform does.

    redis_srv = RedisServer()            # started; .client is a redis.Redis
    redis_srv.restart()                  # SHUTDOWN NOSAVE, then a new server on the same port
    c = Consumer(tmp_path, redis_srv, "q", "c1", code=PREDICTOR)   # waits until it claims
    redis_srv.add("q", {"input": {...}, "webhook": rx.url})         # XADD q * value JSON
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from conftest import SLOW, LoggedProcess, free_port

CLAIMING_RE = r"claiming predictions from"

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    def __init__(self):
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed: scripts/install-deps.sh installs it")
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--loglevel", "warning"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        deadline = time.time() + 10 * SLOW
        while True:
            try:
                if self.client.ping():
                    return
            except redis.exceptions.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def add(self, stream, message):
        """XADD stream * value JSON; returns the entry id."""
        return self.client.xadd(stream, {"value": json.dumps(message)})

    def add_raw(self, stream, fields):
        return self.client.xadd(stream, fields)

    def create_group(self, stream):
        try:
            self.client.xgroup_create(stream, stream, id="$", mkstream=True)
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def pending(self, stream):
        """XPENDING summary count (0 when the group does not exist)."""
        try:
            return self.client.xpending(stream, stream)["pending"]
        except redis.exceptions.ResponseError:
            return 0

    def wait_pending(self, stream, n, timeout=10):
        deadline = time.time() + timeout * SLOW
        while True:
            got = self.pending(stream)
            if got == n:
                return
            if time.time() > deadline:
                raise AssertionError("pending on %s is %d, not %d" % (stream, got, n))
            time.sleep(0.02)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # a raw SHUTDOWN NOSAVE: redis-py retries the command when the connection drops
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n")
                    s.recv(100)
            except OSError:
                pass
            self.client.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        """SHUTDOWN NOSAVE (everything in it is lost), then a new server on the same port."""
        self.stop()
        self.start()


class Consumer(LoggedProcess):
    """One `python -m coglet` in pull mode; its log lines are collected."""

    def __init__(self, where, redis_srv, stream, consumer_id, code=None, ref="predict.py:Predictor", env=None,
                 args=(), wait=CLAIMING_RE, redis_url=None):
        where = pathlib.Path(where)
        if code is not None:
            (where / "predict.py").write_text(textwrap.dedent(code))
        full_env = dict(os.environ)
        full_env.setdefault("COG_LOG_LEVEL", "info")
        full_env.pop("LOG_FORMAT", None)
        full_env.setdefault("COG_THROTTLE_RESPONSE_INTERVAL", "0")
        full_env.setdefault("COGLET_WEBHOOK_RETRY_BASE", "0.05")
        full_env.update(env or {})
        cmd = [sys.executable, "-m", "coglet", *([ref] if ref else []), "--redis-url", redis_url or redis_srv.url,
               "--input-queue", stream, "--consumer-id", consumer_id, *args]
        self.proc = subprocess.Popen(cmd, cwd=str(where), env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._collect()
        if wait:
            self.wait_log(wait, timeout=30)

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            raise AssertionError("consumer did not exit:\n" + self.log_text())


@pytest.fixture
def redis_srv():
    srv = RedisServer()
    yield srv
    srv.stop()


@pytest.fixture
def make_consumer(tmp_path):
    """make_consumer(redis_srv, stream, consumer_id, code=..., env=..., args=...)."""
    made = []

    def make(redis_srv, stream, consumer_id, code=None, where=None, **kw):
        d = pathlib.Path(where or tmp_path)
        d.mkdir(parents=True, exist_ok=True)
        c = Consumer(d, redis_srv, stream, consumer_id, code=code, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop(signal.SIGKILL)
