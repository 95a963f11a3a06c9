"""Worker lifecycle: setup failures (docs/worker-protocol.md#setup-failures) and worker
crashes after ready (docs/worker-protocol.md#losing-a-slot-or-the-worker): the parent stays
up and keeps answering."""

import os
import re
import signal
import threading

import pytest
import requests

from conftest import SLOW

NOT_READY = (
    '{"error":"Setup has not finished yet. Wait until it has finished, or GET /health-check for status.",'
    '"status":"failed"}'
)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


# ---- setup failures ----


def assert_setup_failed(srv):
    health = srv.wait_status("SETUP_FAILED", timeout=30)
    assert health["status"] == "SETUP_FAILED", health
    setup = health["setup"]
    assert setup["status"] == "failed", setup
    assert "completed_at" in setup
    r = srv.predict({})
    assert r.status_code == 503
    assert r.text == NOT_READY
    assert srv.put("/predictions/x", {}).status_code == 503
    # the HTTP server keeps running
    assert srv.get("/").status_code == 200
    assert srv.get("/openapi.json").status_code == 503
    return setup["logs"]


def test_setup_exception(make_server):
    s = make_server(
        code="""
        class Predictor:
            def setup(self):
                print("about to fail")
                raise RuntimeError("setup exploded")

            def predict(self) -> str:
                return "never"
        """
    )
    logs = assert_setup_failed(s)
    assert "RuntimeError: setup exploded" in logs, logs
    assert re.search(
        r"worker setup failed: worker setup failed \(slot %s\): Setup failed: setup failed: "
        r"RuntimeError: setup exploded$" % UUID,
        logs,
    ), logs
    # the user's setup print still went to the server log
    s.wait_log("about to fail")


def test_setup_failure_logs_keep_setup_output_then_error(make_server):
    """The Rust coglet shows only the error string; we keep what setup printed before it (the
    accumulated setup log), and the error string is the last line."""
    s = make_server(
        code="""
        class Predictor:
            def setup(self):
                print("noise printed before the failure")
                raise RuntimeError("setup exploded")

            def predict(self) -> str:
                return "never"
        """
    )
    logs = assert_setup_failed(s)
    assert "[coglet::setup] noise printed before the failure\n" in logs, logs
    assert logs.index("noise printed before the failure") < logs.index("RuntimeError: setup exploded")
    last = logs.split("\n")[-1]
    assert re.fullmatch(
        r"worker setup failed: worker setup failed \(slot %s\): Setup failed: setup failed: "
        r"RuntimeError: setup exploded" % UUID,
        last,
    ), logs
    assert "Server ready" not in logs
    assert "Setup complete, now accepting requests" not in logs


def test_import_time_exception(make_server):
    s = make_server(
        code="""
        print("importing")
        raise ImportError("import exploded")

        class Predictor:
            def predict(self) -> str:
                return "never"
        """
    )
    logs = assert_setup_failed(s)
    assert "ImportError: import exploded" in logs, logs
    assert re.search(
        r"worker setup failed: worker setup failed \(slot %s\): Setup failed: failed to load predictor: "
        r"ImportError: import exploded$" % UUID,
        logs,
    ), logs


def test_missing_class(make_server):
    s = make_server(
        code="""
        class Predictor:
            def predict(self) -> str:
                return "x"
        """,
        ref="predict.py:Missing",
    )
    logs = assert_setup_failed(s)
    assert "Missing" in logs, logs
    assert "failed to load predictor: " in logs, logs


def test_missing_file(make_server):
    s = make_server(ref="nope.py:Predictor")
    logs = assert_setup_failed(s)
    assert "failed to load predictor: " in logs, logs
    assert "nope" in logs, logs


def test_syntax_error(make_server):
    s = make_server(code="class Predictor(:\n    pass\n")
    logs = assert_setup_failed(s)
    assert "SyntaxError" in logs, logs


def test_no_predict_method(make_server):
    s = make_server(
        code="""
        class Predictor:
            def setup(self):
                pass
        """
    )
    logs = assert_setup_failed(s)
    assert "predict" in logs, logs


def test_worker_exits_after_setup_failure(make_server):
    s = make_server(
        code="""
        class Predictor:
            def setup(self):
                raise RuntimeError("bye")
            def predict(self):
                return 1
        """
    )
    assert_setup_failed(s)
    wait_no_live_children(s)
    # and the parent is still serving
    assert s.health()["status"] == "SETUP_FAILED"


def wait_no_live_children(srv, timeout=20):
    import time

    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        live = [p for p in srv.worker_pids() if not is_zombie(p)]
        if not live:
            return
        time.sleep(0.05)
    raise AssertionError("worker still alive: %r" % srv.worker_pids())


def is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


# ---- crashes after ready ----

SLEEPER = """
import os
import sys
import time


class Predictor:
    def predict(self, how: str = "sleep"):
        if how == "ok":
            return "fine"
        if how == "exit3":
            print("exiting now", flush=True)
            os._exit(3)
        print("sleeping now", flush=True)
        time.sleep(120)
        return "woke"
"""


def start_prediction(srv, inp):
    result = {}

    def go():
        try:
            result["r"] = requests.post(srv.url + "/predictions", json={"input": inp}, timeout=60 * SLOW)
        except Exception as e:  # surfaced by the test
            result["exc"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, result


def test_worker_sigkill_mid_prediction(make_server):
    s = make_server(code=SLEEPER)
    assert s.health()["status"] == "READY", s.log_text()
    assert s.predict({"how": "ok"}).json()["output"] == "fine"

    t, result = start_prediction(s, {"how": "sleep"})
    s.wait_log("sleeping now")
    pids = s.worker_pids()
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    t.join(60 * SLOW)
    assert not t.is_alive()
    assert "exc" not in result, result
    r = result["r"]
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "failed", body
    assert "Worker crashed" in body["error"], body
    assert body["logs"] == ""
    assert "predict_time" in body["metrics"]

    health = s.wait_status("DEFUNCT", timeout=20)
    assert health["status"] == "DEFUNCT"
    # the parent keeps answering
    for _ in range(3):
        assert s.get("/health-check").status_code == 200
    assert s.get("/").status_code == 200
    s.wait_log(r"signal 9\b|SIGKILL")
    assert s.proc.poll() is None
    # new predictions are answered (not hung), and do not succeed
    r2 = s.predict({"how": "ok"})
    assert r2.status_code in (200, 409, 503), r2.text
    if r2.status_code == 200:
        assert r2.json()["status"] == "failed", r2.text


def test_worker_os_exit_mid_prediction(make_server):
    s = make_server(code=SLEEPER)
    assert s.health()["status"] == "READY", s.log_text()
    r = s.predict({"how": "exit3"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "failed", body
    assert "Worker crashed" in body["error"], body
    s.wait_log(r"\bcode 3\b")
    s.wait_status("DEFUNCT", timeout=20)
    assert s.proc.poll() is None
    assert s.get("/").status_code == 200


def test_stop_after_crash_exits_cleanly(make_server):
    s = make_server(code=SLEEPER)
    pids = s.worker_pids()
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    s.wait_status("DEFUNCT", timeout=20)
    assert s.stop(signal.SIGTERM) == 0
    s.wait_log("Server shutdown complete")
