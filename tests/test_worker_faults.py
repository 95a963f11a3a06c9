"""Worker faults (docs/operations.md#failure-modes), acted out for real by a predictor: garbage
written to its own sockets, a frame over the limit, half a frame, a socket closed, the
worker killed at every phase, stopped with SIGSTOP, no longer reading what the parent
sends, printing without end. Each time the parent logs the cause, fails only the predictions
the fault touches, keeps its memory bounded, and its health check tells the truth."""

import http.server
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest
import requests

from conftest import SANITIZED, SLOW, raw_request

CONTROL_FD = 3
SLOT_FD = 4
FRAME_MAX = 8 << 20
LOGS_KEPT = (1 << 20) + (7 << 20)
TRUNCATED = "THE FIRST 1 MiB AND THE LAST 7 MiB ARE KEPT ****]"
# How much a process may grow while a fault plays out (ASan's redzones make allocations larger).
GROWTH_MIB = 128 if SANITIZED else 64
# ASan's quarantine keeps freed memory resident (256 MiB of it): make it reuse it instead.
MEASURED = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1"} if SANITIZED else None


def assert_bounded(grown, who="the parent"):
    assert grown < GROWTH_MIB, "%s grew by %d MiB" % (who, grown)
STOPPED = "Worker process is stopped (SIGSTOP, SIGTSTP or a debugger): nothing runs until it is continued"

FAULTY = """
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Iterator

from cog import Path


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def close_socket(fd):
    s = socket.socket(fileno=os.dup(fd))
    s.shutdown(socket.SHUT_RDWR)
    s.close()


FAULTS = {
    "garbage": lambda fd: os.write(fd, b"this is not a frame, only bytes\\n"),
    "oversized": lambda fd: os.write(fd, struct.pack(">I", (8 << 20) + 1) + b'{"type":"log_line"'),
    "not_json": lambda fd: os.write(fd, frame(b"{not json")),
    "not_object": lambda fd: os.write(fd, frame(b"[1, 2, 3]")),
    "untyped": lambda fd: os.write(fd, frame(b'{"id": "x"}')),
    # the frame the worker sends next (done) is read as the rest of this one
    "half": lambda fd: os.write(fd, struct.pack(">I", 40) + b'{"type":"log_line"'),
    "close": close_socket,
    "half_close": lambda fd: (os.write(fd, struct.pack(">I", 100) + b'{"type":"lo'), close_socket(fd)),
    "half_kill": lambda fd: (os.write(fd, struct.pack(">I", 100) + b'{"type":"lo'),
                             os.kill(os.getpid(), signal.SIGKILL)),
    "kill": lambda fd: os.kill(os.getpid(), signal.SIGKILL),
    "stop": lambda fd: os.kill(os.getpid(), signal.SIGSTOP),
}


class Predictor:
    def setup(self):
        if os.environ.get("FAULT_IN_SETUP") == "kill":
            print("setup: about to die", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    def predict(self, fault: str = "none", fd: int = 4, n: int = 0, wait: float = 0.0, path: str = "") -> str:
        if fault == "lines":
            for i in range(n):
                print("line %06d %s" % (i, "x" * 80))
            return "printed"
        if fault == "no_newline":
            chunk = "y" * (1 << 20)
            for _ in range(n):
                sys.stdout.write(chunk)
            sys.stdout.write("\\n")
            return "printed"
        if fault == "kill_after":
            threading.Timer(wait, os.kill, (os.getpid(), signal.SIGKILL)).start()
            return "done before the kill"
        if fault == "file":
            with open(path, "w") as f:
                f.write("an output file")
            return Path(path)
        print("running %s" % fault, flush=True)
        if fault != "none":
            FAULTS[fault](fd)
        end = time.time() + wait
        while time.time() < end:  # short sleeps: a cancel lands between two
            time.sleep(0.01)
        return "survived %s" % fault
"""

# Two slots: an async predictor (concurrency above 1 needs one).
ASYNC_FAULTY = """
import asyncio
import os


class Predictor:
    async def predict(self, fault: str = "none", fd: int = 4, wait: float = 0.0) -> str:
        print("running %s" % fault, flush=True)
        if fault == "garbage":
            os.write(fd, b"this is not a frame, only bytes\\n")
        await asyncio.sleep(wait)
        return "survived %s" % fault
"""

WITH_HEALTHCHECK = """
class Predictor:
    def predict(self) -> str:
        return "ok"

    def healthcheck(self) -> bool:
        return True
"""

GENERATOR_OF_FILES = """
import time
from typing import Iterator

from cog import Path


class Predictor:
    def predict(self, path: str) -> Iterator[Path]:
        with open(path, "w") as f:
            f.write("first file")
        yield Path(path)
        print("yielded", flush=True)
        time.sleep(60)
"""


# ---- helpers ----


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


class PeakRss:
    """Samples a process's resident memory until stopped; `peak` is the largest seen."""

    def __init__(self, pid):
        self.pid = pid
        self.base = rss_kib(pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self):
        self._stop.set()
        self._thread.join()
        return (self.peak - self.base) // 1024  # MiB grown


def in_thread(fn, *args, **kw):
    """Runs fn in a thread; returns (thread, result dict with "r" or "exc")."""
    result = {}

    def go():
        try:
            result["r"] = fn(*args, **kw)
        except Exception as e:  # surfaced by the test
            result["exc"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, result


def predict_in_thread(srv, inp):
    return in_thread(requests.post, srv.url + "/predictions", json={"input": inp}, timeout=120 * SLOW)


def joined(t, result):
    t.join(120 * SLOW)
    assert not t.is_alive(), "the request never got an answer"
    assert "exc" not in result, result
    return result["r"]


def the_worker(srv):
    pids = srv.worker_pids()
    assert len(pids) == 1, pids
    return pids[0]


def failed_with(r, prefix):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "failed", body
    assert body["error"].startswith(prefix), body["error"]
    return body


def assert_defunct(srv, inp=None):
    health = srv.wait_status("DEFUNCT")
    r = srv.predict(inp or {})
    assert r.status_code == 503, r.text
    ready = srv.get("/readyz")
    assert ready.status_code == 503 and ready.json()["reason"] == "defunct", ready.text
    assert srv.get("/").status_code == 200  # the parent keeps answering
    assert srv.proc.poll() is None
    return health


# ---- garbage, oversized and half frames on the slot socket ----


@pytest.mark.parametrize("fault,error", [
    ("garbage", "Slot socket error: frame of 1952999795 bytes exceeds the 8388608 byte limit"),
    ("oversized", "Slot socket error: frame of 8388609 bytes exceeds the 8388608 byte limit"),
    ("not_json", "Slot socket error: invalid JSON frame: "),
    ("not_object", "Slot socket error: frame is not a tagged message object"),
    ("untyped", "Slot socket error: frame is not a tagged message object"),
    ("half", "Slot socket error: invalid JSON frame: "),
])
def test_a_broken_frame_on_the_slot_fails_its_prediction_and_the_slot(make_server, fault, error):
    srv = make_server(FAULTY)
    assert srv.predict({}).json()["output"] == "survived none"
    r = srv.predict({"fault": fault, "wait": 0.3})
    failed_with(r, error)
    srv.wait_log(r"slot 0 poisoned: Slot socket error: ")
    # the only slot is out of service for good: nothing can run, and health says so
    assert_defunct(srv)
    srv.wait_log("every slot is out of service")


def test_a_broken_frame_fails_only_the_prediction_on_that_slot(make_server):
    srv = make_server(ASYNC_FAULTY, env={"COG_MAX_CONCURRENCY": "2"})
    first = predict_in_thread(srv, {"wait": 2})
    srv.wait_log("running none")
    # garbage on slot 0's socket: whichever prediction runs there fails, the other does not
    second = predict_in_thread(srv, {"fault": "garbage", "fd": SLOT_FD, "wait": 2})
    bodies = [joined(*first).json(), joined(*second).json()]
    statuses = sorted(b["status"] for b in bodies)
    assert statuses == ["failed", "succeeded"], bodies
    failed = [b for b in bodies if b["status"] == "failed"][0]
    assert failed["error"].startswith("Slot socket error: frame of "), failed
    # one slot left: the server goes on with it
    assert srv.health()["status"] == "READY"
    assert srv.predict({}).json()["output"] == "survived none"
    busy = predict_in_thread(srv, {"wait": 2})
    srv.wait_status("BUSY")
    assert srv.predict({}).status_code == 409
    assert joined(*busy).json()["status"] == "succeeded"


# ---- sockets closed ----


@pytest.mark.parametrize("fault,error", [
    ("close", "Slot socket closed by the worker"),
    ("half_close", "Slot socket closed by the worker in the middle of a frame"),
])
def test_a_slot_socket_the_worker_closes_fails_its_prediction(make_server, fault, error):
    """The worker lives on (it sleeps for a minute after closing): the prediction fails once the
    parent has given the worker a second to exit, not when the worker next writes."""
    srv = make_server(FAULTY)
    r = srv.predict({"fault": fault, "wait": 60})
    body = failed_with(r, error)
    assert body["error"] == error
    if fault == "half_close":
        srv.wait_log(r"slot 0: the worker closed its socket 15 bytes into a frame")
    assert_defunct(srv)
    assert srv.worker_pids(), "the worker is still alive"


def test_garbage_on_the_control_channel_ends_the_worker(make_server):
    srv = make_server(FAULTY)
    r = srv.predict({"fault": "garbage", "fd": CONTROL_FD, "wait": 60})
    failed_with(r, "Worker control channel error: frame of 1952999795 bytes exceeds the 8388608 byte limit")
    srv.wait_log("control channel error: frame of")
    assert_defunct(srv)
    # the worker sees its control channel closed and exits by itself
    srv.wait_log("Worker process exited with code 0")


def test_the_control_socket_closed_by_the_worker(make_server):
    """The worker's control loop sees its channel end and the worker exits (it never runs
    without one): the prediction fails naming the exit."""
    srv = make_server(FAULTY)
    r = srv.predict({"fault": "close", "fd": CONTROL_FD, "wait": 60})
    body = failed_with(r, "Worker crashed: exited with code 0")
    assert body["error"] == "Worker crashed: exited with code 0"
    assert_defunct(srv)


# ---- the worker killed, at every phase ----

KILL_BEFORE_HANDSHAKE = """
import os
import signal
import sys

if "coglet.server._run_worker()" in " ".join(getattr(sys, "orig_argv", [])):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_worker_killed_before_the_handshake(make_server, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(KILL_BEFORE_HANDSHAKE)
    # sitecustomize runs when an interpreter starts: in a spawned worker, not a forked one
    srv = make_server(FAULTY, env={"PYTHONPATH": str(site), "COGLET_WORKER_START": "spawn"})
    health = srv.wait_status("SETUP_FAILED")
    assert health["setup"]["logs"].endswith("worker crashed"), health
    srv.wait_log(r"Worker crashed: killed by signal 9 \(SIGKILL\) during setup")
    assert srv.predict({}).status_code == 503


def test_worker_killed_during_setup(make_server):
    srv = make_server(FAULTY, env={"FAULT_IN_SETUP": "kill"})
    health = srv.wait_status("SETUP_FAILED")
    logs = health["setup"]["logs"]
    assert "setup: about to die" in logs and logs.endswith("worker crashed"), logs
    srv.wait_log(r"Worker crashed: killed by signal 9 \(SIGKILL\) during setup")
    assert srv.predict({}).status_code == 503


@pytest.mark.parametrize("fault", ["kill", "half_kill"])
def test_worker_killed_during_a_prediction(make_server, fault):
    srv = make_server(FAULTY)
    r = srv.predict({"fault": fault})
    body = failed_with(r, "Worker crashed: killed by signal 9 (SIGKILL)")
    assert body["error"] == "Worker crashed: killed by signal 9 (SIGKILL)"
    if fault == "half_kill":
        srv.wait_log(r"slot 0: the worker closed its socket 15 bytes into a frame")
    assert_defunct(srv)
    assert srv.predict({}).json()["error"] == "Worker crashed; restart the server to serve predictions again"


def test_worker_killed_between_predictions(make_server):
    srv = make_server(FAULTY)
    body = srv.predict({"fault": "kill_after", "wait": 0.2}).json()
    assert body["status"] == "succeeded" and body["output"] == "done before the kill", body
    srv.wait_log(r"Worker crashed: killed by signal 9 \(SIGKILL\)")
    assert_defunct(srv)
    assert not [m for m in srv.messages() if m.startswith("Prediction failed")], srv.log_text()


class HeldUploads:
    """An upload target that reads each PUT and answers 201 only once `release` is set."""

    def __init__(self):
        self.release = threading.Event()
        self.arrived = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_PUT(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                owner.arrived.set()
                owner.release.wait(60)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d/up" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def held_uploads():
    up = HeldUploads()
    yield up
    up.close()


def test_worker_killed_during_an_upload_after_it_finished(make_server, held_uploads, tmp_path):
    """The worker said done; the parent uploads the file on its own: the prediction succeeds."""
    srv = make_server(FAULTY, args=["--upload-url", held_uploads.url])
    out = tmp_path / "out.txt"
    t, result = predict_in_thread(srv, {"fault": "file", "path": str(out)})
    assert held_uploads.arrived.wait(30 * SLOW)
    os.kill(the_worker(srv), signal.SIGKILL)
    srv.wait_status("DEFUNCT")
    held_uploads.release.set()
    body = joined(t, result).json()
    assert body["status"] == "succeeded", body
    assert body["output"] == held_uploads.url + "/out.txt"


def test_worker_killed_during_an_upload_before_it_finished(make_server, held_uploads, tmp_path):
    """A generator yielded a file (its upload held) and goes on: the worker's death fails the
    prediction at once, and the upload it had started is abandoned."""
    srv = make_server(GENERATOR_OF_FILES, args=["--upload-url", held_uploads.url])
    t, result = predict_in_thread(srv, {"path": str(tmp_path / "gen.txt")})
    assert held_uploads.arrived.wait(30 * SLOW)
    srv.wait_log("yielded")
    os.kill(the_worker(srv), signal.SIGKILL)
    body = joined(t, result).json()
    assert body["status"] == "failed" and body["error"] == "Worker crashed: killed by signal 9 (SIGKILL)", body
    assert_defunct(srv, {"path": "x"})


# ---- the worker stopped ----


def test_a_stopped_worker_makes_health_unhealthy_until_it_continues(make_server):
    srv = make_server(FAULTY)
    pid = the_worker(srv)
    os.kill(pid, signal.SIGSTOP)
    try:
        health = srv.wait_status("UNHEALTHY")
        assert health["user_healthcheck_error"] == STOPPED, health
        ready = srv.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "stopped", ready.text
        assert ready.json()["detail"] == STOPPED
    finally:
        os.kill(pid, signal.SIGCONT)
    assert srv.wait_status("READY")["status"] == "READY"
    assert "user_healthcheck_error" not in srv.health()
    assert srv.get("/readyz").status_code == 200
    assert srv.predict({}).json()["output"] == "survived none"


def test_a_stopped_worker_is_reported_without_waiting_for_its_healthcheck(make_server):
    """With a user healthcheck the health check would wait for the worker (10 s), then say
    `healthcheck timed out`; a stopped worker is reported as stopped, at once."""
    srv = make_server(WITH_HEALTHCHECK)
    assert srv.health()["status"] == "READY"
    pid = the_worker(srv)
    os.kill(pid, signal.SIGSTOP)
    try:
        health = srv.wait_status("UNHEALTHY")
        assert health["user_healthcheck_error"] == STOPPED, health
    finally:
        os.kill(pid, signal.SIGCONT)
    assert srv.wait_status("READY")["status"] == "READY"
    assert srv.predict().json()["output"] == "ok"


def test_a_worker_that_stops_itself_mid_prediction(make_server):
    srv = make_server(FAULTY)
    # the stop lands a moment after the kill() returns (another thread of the worker takes the
    # signal): the predictor goes on for a second, stopped meanwhile
    t, result = predict_in_thread(srv, {"fault": "stop", "wait": 1})
    health = srv.wait_status("UNHEALTHY")
    assert health["user_healthcheck_error"] == STOPPED, health
    assert t.is_alive()
    os.kill(the_worker(srv), signal.SIGCONT)
    assert joined(t, result).json()["output"] == "survived stop"
    assert srv.wait_status("READY")["status"] == "READY"


# ---- a worker that does not read ----


def test_cancels_to_a_worker_that_does_not_read_are_bounded(make_server):
    """A stopped worker reads nothing: the parent queues a cancel for each POST .../cancel
    until 1 MiB waits unsent, then fails the prediction with a clear error instead of
    growing. Its slot, which may still run it, waits out of service for the worker to finish
    it: once the worker continues, it does, and the slot serves again."""
    srv = make_server(FAULTY, env=MEASURED)
    pid = the_worker(srv)
    t, result = in_thread(requests.post, srv.url + "/predictions",
                          json={"id": "stuck", "input": {"fault": "none", "wait": 60}}, timeout=120 * SLOW)
    srv.wait_log("running none")
    os.kill(pid, signal.SIGSTOP)
    continued = False
    try:
        peak = PeakRss(srv.proc.pid)
        cancel = raw_request("POST", "/predictions/stuck/cancel")
        statuses = []
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60 * SLOW) as sock:
            reader = sock.makefile("rb")
            for _ in range(20):  # 40,000 cancels at most; about 10,000 fill the queue
                sock.sendall(cancel * 2000)
                for _ in range(2000):
                    status = int(reader.readline().split()[1])
                    while reader.readline() not in (b"\r\n", b""):
                        pass
                    reader.read(2)  # the body: {}
                    statuses.append(status)
                if 404 in statuses:
                    break
        grown = peak.stop()
        assert 404 in statuses, "the prediction never ended"
        body = joined(t, result).json()
        assert body["status"] == "failed", body
        assert body["error"].startswith(
            "Cancel not delivered: the worker has not read the last "), body["error"]
        assert body["error"].endswith(" bytes sent on its control channel"), body["error"]
        unsent = int(body["error"].split("last ")[1].split()[0])
        assert (1 << 20) - 200 <= unsent <= 1 << 20, unsent
        assert_bounded(grown)
        srv.wait_log("Cancel not delivered")
        health = srv.health()
        assert health["status"] == "UNHEALTHY" and health["user_healthcheck_error"] == STOPPED, health
        assert srv.predict({}).status_code == 409  # the slot waits for the worker
        os.kill(pid, signal.SIGCONT)
        continued = True
        # the worker reads the cancels, the prediction ends there, and the slot comes back
        srv.wait_log("slot 0 is free again")
        assert srv.wait_status("READY")["status"] == "READY"
        assert srv.predict({}).json()["output"] == "survived none"
    finally:
        if not continued:
            os.kill(pid, signal.SIGCONT)


# ---- a predictor that prints without end ----


def test_a_hundred_thousand_lines_keep_the_first_and_last_of_the_logs(make_server):
    srv = make_server(FAULTY, env=MEASURED)
    peak = PeakRss(srv.proc.pid)
    r = srv.predict({"fault": "lines", "n": 100000}, timeout=300 * SLOW)
    grown = peak.stop()
    body = r.json()
    assert body["status"] == "succeeded", body["status"]
    logs = body["logs"]
    line = "line %06d " + "x" * 80 + "\n"
    assert logs.startswith(line % 0 + line % 1), logs[:200]
    assert logs.endswith(line % 99998 + line % 99999), logs[-200:]
    assert TRUNCATED in logs
    head, marker, rest = logs.partition("[**** LOGS TRUNCATED: ")
    assert marker
    # the head is the first 1 MiB (cut inside a line, so the marker starts a new one)
    assert head == "".join(line % i for i in range(12000))[: 1 << 20] + "\n", len(head)
    dropped = int(rest.split(" BYTES DROPPED")[0])
    tail = rest.split("\n", 1)[1]
    assert len(tail) == 7 << 20
    assert (1 << 20) + dropped + len(tail) == len(line % 0) * 100000
    assert_bounded(grown)
    srv.wait_log("logs over 8 MiB: keeping the first 1 MiB and the last 7 MiB")
    assert srv.predict({}).json()["logs"] == "running none\n"


def test_two_hundred_mib_without_a_newline(make_server):
    """The worker cuts the line at 4 MiB (docs/worker-protocol.md#log-routing) and holds no
    more of it than that; the parent holds one 4 MiB line."""
    srv = make_server(FAULTY, env=MEASURED)
    peak = PeakRss(srv.proc.pid)
    worker_peak = PeakRss(the_worker(srv))
    r = srv.predict({"fault": "no_newline", "n": 200}, timeout=300 * SLOW)
    grown = peak.stop()
    worker_grown = worker_peak.stop()
    body = r.json()
    assert body["status"] == "succeeded", body["status"]
    logs = body["logs"]
    assert logs.endswith("[**** LOG LINE TRUNCATED AT 4 MiB ****]"), logs[-100:]
    assert len(logs.encode()) == 4 << 20
    assert_bounded(grown)
    assert_bounded(worker_grown, "the worker")
    assert srv.predict({}).json()["output"] == "survived none"
