"""COGLET_RESTART_WORKER=1: after the worker dies its in-flight predictions fail as before,
then a new worker is spawned and set up (STARTING, /readyz 503, then READY), with a backoff
between attempts and a limit on restarts in a row (docs/operations.md, "Worker restart")."""

import os
import re
import signal
import threading
import time

from conftest import HOLD, SLOW

PREDICTOR = HOLD + """


class Predictor:
    def setup(self):
        if os.path.exists(os.environ["BREAK_SETUP"]):
            raise RuntimeError("setup broken on purpose")
        print("setup in pid %d" % os.getpid())

    def predict(self, gate: str = "", started: str = "") -> int:
        hold(gate, started)
        return os.getpid()
"""


def wait_until(cond, what, timeout=20):
    deadline = time.time() + timeout * SLOW
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.02)


def metric(srv, name):
    m = re.search(r"^%s (\S+)$" % re.escape(name), srv.get("/metrics").text, re.M)
    return float(m.group(1)) if m else None


def kill_worker(srv):
    pids = srv.worker_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def start(make_server, tmp_path, **env):
    base = {"COGLET_RESTART_WORKER": "1", "COGLET_RESTART_BACKOFF": "1",
            "BREAK_SETUP": str(tmp_path / "break-setup")}
    base.update(env)
    s = make_server(code=PREDICTOR, env=base)
    assert s.health()["status"] == "READY", s.log_text()
    return s


def test_a_crash_fails_in_flight_then_a_new_worker_serves(make_server, tmp_path):
    s = start(make_server, tmp_path)
    first_pid = s.predict().json()["output"]
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
    out = {}
    t = threading.Thread(target=lambda: out.update(r=s.predict({"gate": gate, "started": started})))
    t.start()
    wait_until(lambda: os.path.exists(started), "never started")
    kill_worker(s)
    t.join(30 * SLOW)
    body = out["r"].json()
    assert body["status"] == "failed"
    assert body["error"].startswith("Worker crashed: killed by signal 9"), body
    # coming back: not DEFUNCT, and not ready until the new worker's setup is done
    assert s.health()["status"] == "STARTING"
    r = s.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "restarting", r.text
    assert s.predict().status_code == 503
    s.wait_status("READY")
    second_pid = s.predict().json()["output"]
    assert second_pid != first_pid
    assert s.get("/readyz").status_code == 200
    assert metric(s, "coglet_worker_crashes_total") == 1
    assert metric(s, "coglet_worker_restarts_total") == 1
    assert "setup in pid %d" % second_pid in s.health()["setup"]["logs"]


def test_waiting_predictions_run_on_the_new_worker(make_server, tmp_path):
    s = start(make_server, tmp_path, COG_QUEUE_DEPTH="1")
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
    out = {}
    t1 = threading.Thread(target=lambda: out.update(a=s.predict({"gate": gate, "started": started})))
    t1.start()
    wait_until(lambda: os.path.exists(started), "never started")
    t2 = threading.Thread(target=lambda: out.update(b=s.predict()))
    t2.start()
    wait_until(lambda: metric(s, "coglet_wait_queue_depth") == 1, "never waited")
    kill_worker(s)
    t1.join(30 * SLOW)
    t2.join(60 * SLOW)
    assert out["a"].json()["status"] == "failed"
    assert out["b"].json()["status"] == "succeeded", out["b"].text


def test_restarts_in_a_row_are_limited(make_server, tmp_path):
    s = start(make_server, tmp_path, COGLET_RESTART_MAX="1", COGLET_RESTART_BACKOFF="0.1")
    kill_worker(s)
    wait_until(lambda: metric(s, "coglet_worker_restarts_total") == 1, "never restarted")
    s.wait_status("READY")
    kill_worker(s)  # no succeeded prediction in between: the limit is reached
    s.wait_status("DEFUNCT")
    s.wait_log("not restarting the worker: 1 restart")
    r = s.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "defunct"
    assert metric(s, "coglet_worker_crashes_total") == 2
    assert metric(s, "coglet_worker_restarts_total") == 1


def test_a_success_resets_the_count(make_server, tmp_path):
    s = start(make_server, tmp_path, COGLET_RESTART_MAX="1", COGLET_RESTART_BACKOFF="0.1")
    for n in (1, 2):
        kill_worker(s)
        wait_until(lambda: metric(s, "coglet_worker_restarts_total") == n, "restart %d never came" % n)
        s.wait_status("READY")
        assert s.predict().json()["status"] == "succeeded"
    assert metric(s, "coglet_worker_restarts_total") == 2


def test_a_failed_setup_on_restart_is_retried(make_server, tmp_path):
    s = start(make_server, tmp_path, COGLET_RESTART_BACKOFF="0.2", COGLET_RESTART_MAX="10")
    broken = tmp_path / "break-setup"
    broken.write_text("")
    kill_worker(s)
    s.wait_log("The restarted worker's setup failed; restarting the worker")
    assert s.get("/readyz").status_code == 503
    broken.unlink()
    s.wait_status("READY", timeout=60)
    assert s.predict().json()["status"] == "succeeded"


def test_without_the_switch_the_server_stays_defunct(make_server, tmp_path):
    s = make_server(code=PREDICTOR, env={"BREAK_SETUP": str(tmp_path / "break-setup")})
    kill_worker(s)
    s.wait_status("DEFUNCT")
    time.sleep(0.5)
    assert s.health()["status"] == "DEFUNCT"
    assert s.worker_pids() == []
