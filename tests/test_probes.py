"""Kubernetes probes: GET /livez answers 200 whenever the loop turns; GET /readyz answers
200 exactly when a create would be accepted, else 503 with the reason in a JSON body
(docs/operations.md, "Probes"). /health-check keeps its own behaviour."""

import os
import signal
import sys
import threading
import time
import uuid

from conftest import HOLD, SLOW

GATED = HOLD + """


class Predictor:
    def setup(self):
        gate = os.environ.get("SETUP_GATE")
        while gate and not os.path.exists(gate):
            time.sleep(0.01)

    def predict(self, gate: str = "", started: str = "") -> str:
        hold(gate, started)
        return "ok"
"""

FAILING_SETUP = """
class Predictor:
    def setup(self):
        raise RuntimeError("no weights")

    def predict(self) -> str:
        return "never"
"""


def readyz(srv):
    r = srv.get("/readyz")
    assert r.headers["Content-Type"].startswith("application/json")
    return r.status_code, r.json()


def wait_file(path, timeout=10):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "never created: %s" % path
        time.sleep(0.01)


def test_setup_then_ready(make_server, tmp_path):
    gate = str(tmp_path / "setup-gate")
    s = make_server(code=GATED, env={"SETUP_GATE": gate}, ready=False)
    s.wait_status("STARTING")
    assert s.get("/livez").status_code == 200
    assert s.get("/livez").json() == {"status": "alive"}
    code, body = readyz(s)
    assert code == 503
    assert body["status"] == "not_ready" and body["reason"] == "setup", body
    open(gate, "w").close()
    s.wait_status("READY")
    assert readyz(s) == (200, {"status": "ready"})


def test_busy_when_every_slot_is_taken(make_server, tmp_path):
    s = make_server(code=GATED)
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
    t = threading.Thread(target=lambda: s.predict({"gate": gate, "started": started}))
    t.start()
    wait_file(started)
    code, body = readyz(s)
    assert code == 503 and body["reason"] == "busy", body
    assert s.get("/livez").status_code == 200
    assert s.health()["status"] == "BUSY"  # unchanged: /health-check says the same
    open(gate, "w").close()
    t.join(30 * SLOW)
    assert readyz(s)[0] == 200


def test_ready_while_the_wait_queue_has_room(make_server, tmp_path):
    s = make_server(code=GATED, env={"COG_QUEUE_DEPTH": "1"})
    gate = str(tmp_path / "gate")
    started = str(tmp_path / "started")
    threads = [threading.Thread(target=lambda: s.predict({"gate": gate, "started": started}))]
    threads[0].start()
    wait_file(started)
    assert readyz(s)[0] == 200  # one more may wait
    threads.append(threading.Thread(target=lambda: s.predict({"gate": gate})))
    threads[1].start()
    deadline = time.time() + 10 * SLOW
    while readyz(s)[0] == 200:
        assert time.time() < deadline, "readyz never said busy"
        time.sleep(0.02)
    assert readyz(s)[1]["reason"] == "busy"
    open(gate, "w").close()
    for t in threads:
        t.join(30 * SLOW)
    assert readyz(s)[0] == 200


def test_setup_failed(make_server):
    s = make_server(code=FAILING_SETUP)
    assert s.health()["status"] == "SETUP_FAILED"
    code, body = readyz(s)
    assert code == 503 and body["reason"] == "setup_failed", body
    assert s.get("/livez").status_code == 200


def test_defunct_after_the_worker_dies(make_server):
    s = make_server(code=GATED)
    for pid in s.worker_pids():
        os.kill(pid, signal.SIGKILL)
    s.wait_status("DEFUNCT")
    code, body = readyz(s)
    assert code == 503 and body["reason"] == "defunct", body
    assert s.get("/livez").status_code == 200


def test_shutting_down(make_server, tmp_path):
    s = make_server(code=GATED)
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
    t = threading.Thread(target=lambda: s.predict({"gate": gate, "started": started}))
    t.start()
    wait_file(started)
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("Received SIGTERM")
    code, body = readyz(s)
    assert code == 503 and body["reason"] == "shutting_down", body
    open(gate, "w").close()
    t.join(30 * SLOW)


def test_health_only_mode(make_server):
    s = make_server(ref=None, ready=False, launcher=[
        sys.executable, "-c", "import coglet; coglet.server.serve(None, '127.0.0.1', 0)"])
    s.wait_status("UNKNOWN")
    code, body = readyz(s)
    assert code == 503 and body["reason"] == "no_predictor", body


def test_methods_and_head(make_server):
    s = make_server(code=GATED)
    assert s.session.head(s.url + "/readyz").status_code == 200
    assert s.session.head(s.url + "/livez").status_code == 200
    r = s.post("/readyz")
    assert r.status_code == 405 and r.headers["Allow"] == "GET,HEAD"
    assert s.post("/livez").status_code == 405
    assert s.post("/metrics").status_code == 405
    name = "/readyz" + uuid.uuid4().hex
    assert s.get(name).status_code == 404
