"""Local webhook receivers for the tests: a real threaded HTTP server that records every
request it gets, and answers from a script of statuses.

    rx = Receiver()                      # answers 200 to everything
    rx = Receiver([500, 503, 200])       # answers 500, then 503, then 200 from then on
    rx = Receiver(["drop", 200])         # first request: connection closed without an answer
    rx = Receiver(["hang", 200])         # first request: read, then never answered
    rx = Receiver(["redirect 307 /b"])   # first request: 307 to /b
    rx = Receiver(hang=True)             # accepts and never answers anything
    rx = Receiver(port=p)                # listen on a given port
    url = refusing_url()                 # a free port with nothing listening

Each recorded request is a Hit(time, path, headers, body, raw), `time` from time.time(),
taken when the request body has been read (before the answer), `headers` a dict with
lower-case names, `body` the parsed JSON (None when the body is not JSON).
"""

import collections
import http.server
import json
import socket
import threading
import time

import pytest

from conftest import SLOW, free_port

Hit = collections.namedtuple("Hit", "time path headers body raw")

TERMINAL = ("succeeded", "failed", "canceled")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        rx = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        action = rx._record(Hit(time.time(), self.path, headers, body, raw))
        if action == "hang":
            rx._released.wait()
            self.close_connection = True
            return
        if isinstance(action, str) and action.startswith("redirect "):
            _, code, location = action.split(" ", 2)
            self.send_response(int(code))
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if action == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        out = b"{}"
        self.send_response(int(action))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_PUT = do_POST


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128


class Receiver:
    def __init__(self, statuses=None, hang=False, default=200, port=0):
        self._script = list(statuses or [])
        self._default = "hang" if hang else default
        self._cond = threading.Condition()
        self._released = threading.Event()
        self.hits = []
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.receiver = self
        self.port = self._server.server_address[1]
        self.url = "http://127.0.0.1:%d/hook" % self.port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def _record(self, hit):
        with self._cond:
            self.hits.append(hit)
            action = self._script.pop(0) if self._script else self._default
            self._cond.notify_all()
        return action

    def snapshot(self):
        with self._cond:
            return list(self.hits)

    def for_id(self, pred_id):
        return [h for h in self.snapshot() if isinstance(h.body, dict) and h.body.get("id") == pred_id]

    def terminal(self, pred_id=None):
        """Hits whose body has a terminal status (optionally for one prediction id)."""
        hits = self.snapshot() if pred_id is None else self.for_id(pred_id)
        return [h for h in hits if isinstance(h.body, dict) and h.body.get("status") in TERMINAL]

    def wait_for(self, pred, timeout=10, what="webhooks"):
        """Wait until pred(list of hits) is true; returns the hits then."""
        deadline = time.time() + timeout * SLOW
        with self._cond:
            while True:
                hits = list(self.hits)
                if pred(hits):
                    return hits
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("receiver never saw %s; got %d hit(s): %r" % (
                        what, len(hits), [(h.path, h.body) for h in hits]))
                self._cond.wait(min(left, 0.1))

    def wait_count(self, n, pred_id=None, timeout=10):
        if pred_id is None:
            return self.wait_for(lambda hits: len(hits) >= n, timeout, "%d request(s)" % n)
        return self.wait_for(lambda hits: len([h for h in hits if isinstance(h.body, dict)
                                               and h.body.get("id") == pred_id]) >= n,
                             timeout, "%d request(s) for %s" % (n, pred_id))

    def wait_terminal(self, pred_id, timeout=10):
        """The first terminal webhook body for pred_id."""
        self.wait_for(lambda hits: any(isinstance(h.body, dict) and h.body.get("id") == pred_id
                                       and h.body.get("status") in TERMINAL for h in hits),
                      timeout, "a terminal webhook for %s" % pred_id)
        return self.terminal(pred_id)[0].body

    def close(self):
        self._released.set()
        self._server.shutdown()
        self._server.server_close()


def refusing_url():
    """A webhook URL whose port has nothing listening (connections are refused)."""
    return "http://127.0.0.1:%d/hook" % free_port()


@pytest.fixture
def make_receiver():
    """make_receiver(statuses=None, hang=False) -> Receiver, closed after the test."""
    made = []

    def make(*args, **kw):
        rx = Receiver(*args, **kw)
        made.append(rx)
        return rx

    yield make
    for rx in made:
        rx.close()
