"""COG_QUEUE_DEPTH=N: up to N creates (sync and async) wait in arrival order for a slot
instead of getting 409; past N, 409 as before. A waiting prediction that is cancelled, or
whose sync client hangs up, never runs; shutdown treats waiting predictions as accepted;
health says BUSY only when a create would be refused (docs/operations.md, "Wait queue")."""

import json
import os
import re
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import HOLD, SLOW, raw_request
from receivers import Receiver

PREDICTOR = HOLD + """


class Predictor:
    def predict(self, tag: str = "", gate: str = "", log: str = "") -> str:
        if log:
            with open(log, "a") as f:
                f.write(tag + "\\n")
        hold(gate, "")
        return tag
"""


def waiting(srv):
    text = srv.get("/metrics").text
    return int(float(re.search(r"^coglet_wait_queue_depth (\S+)$", text, re.M).group(1)))


def wait_until(cond, what, timeout=10):
    deadline = time.time() + timeout * SLOW
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.02)


def ran(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return f.read().split()


@pytest.fixture
def env(tmp_path):
    return str(tmp_path / "gate"), str(tmp_path / "ran.log")


@pytest.fixture
def srv(make_server):
    return make_server(code=PREDICTOR, env={"COG_QUEUE_DEPTH": "2"})


def start_sync(srv, results, tag, gate, log, **kw):
    def run():
        results[tag] = srv.post("/predictions", {"input": {"tag": tag, "gate": gate, "log": log}}, **kw)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_waits_in_arrival_order_then_409_past_the_depth(srv, env):
    gate, log = env
    results = {}
    threads = [start_sync(srv, results, "first", gate, log)]
    wait_until(lambda: ran(log) == ["first"], "first never started")
    assert srv.health()["status"] == "READY"  # full slots, room in the queue
    threads.append(start_sync(srv, results, "second", gate, log))
    wait_until(lambda: waiting(srv) == 1, "second never waited")
    threads.append(start_sync(srv, results, "third", gate, log))
    wait_until(lambda: waiting(srv) == 2, "third never waited")
    assert srv.health()["status"] == "BUSY"
    r = srv.predict({"tag": "refused"})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "At capacity - all prediction slots busy", "status": "failed"}
    open(gate, "w").close()
    for t in threads:
        t.join(30 * SLOW)
    assert [results[k].json()["output"] for k in ("first", "second", "third")] == ["first", "second", "third"]
    assert all(results[k].json()["status"] == "succeeded" for k in results)
    assert ran(log) == ["first", "second", "third"]
    assert srv.health()["status"] == "READY"
    assert waiting(srv) == 0
    text = srv.get("/metrics").text
    waited = float(re.search(r"^coglet_prediction_wait_seconds_sum (\S+)$", text, re.M).group(1))
    assert waited > 0  # second and third waited for the gate
    assert 'coglet_predictions_rejected_total{door="http",reason="busy"} 1' in text


def test_async_waits_and_a_cancel_removes_it_unrun(srv, env):
    gate, log = env
    rx = Receiver()
    try:
        results = {}
        t = start_sync(srv, results, "running", gate, log)
        wait_until(lambda: ran(log) == ["running"], "never started")
        r = srv.post("/predictions", {"id": "queued-1", "input": {"tag": "queued", "gate": gate, "log": log},
                                      "webhook": rx.url}, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        assert r.json() == {"id": "queued-1", "status": "starting"}
        # a PUT with its id sees it waiting
        again = srv.put("/predictions/queued-1", {"input": {"tag": "queued"}})
        assert again.status_code == 202 and again.json()["status"] == "starting", again.text
        assert srv.post("/predictions/queued-1/cancel").status_code == 200
        final = rx.wait_terminal("queued-1")
        assert final["status"] == "canceled"
        assert waiting(srv) == 0
        assert not any(h.body.get("status") == "processing" for h in rx.for_id("queued-1"))
        open(gate, "w").close()
        t.join(30 * SLOW)
        assert results["running"].json()["status"] == "succeeded"
        assert srv.predict({"tag": "after"}).json()["output"] == "after"
        assert "queued" not in ran(log)
    finally:
        rx.close()


def test_waiting_sync_client_that_hangs_up_never_runs(srv, env):
    gate, log = env
    results = {}
    t = start_sync(srv, results, "running", gate, log)
    wait_until(lambda: ran(log) == ["running"], "never started")
    body = json.dumps({"id": "gone-1", "input": {"tag": "gone", "gate": gate, "log": log}})
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(raw_request("POST", "/predictions", body, {"Content-Type": "application/json"}))
    wait_until(lambda: waiting(srv) == 1, "never waited")
    sock.close()
    wait_until(lambda: waiting(srv) == 0, "the hang-up never removed it")
    srv.wait_log("client disconnected; cancelling prediction")
    open(gate, "w").close()
    t.join(30 * SLOW)
    assert srv.predict({"tag": "next", "log": log}).json()["status"] == "succeeded"
    assert ran(log) == ["running", "next"]


def test_shutdown_runs_waiting_predictions(srv, env):
    gate, log = env
    rx = Receiver()
    try:
        ids = []
        for tag in ("one", "two"):
            r = srv.post("/predictions", {"input": {"tag": tag, "gate": gate, "log": log}, "webhook": rx.url,
                                          "webhook_events_filter": ["completed"]},
                         headers={"Prefer": "respond-async"})
            assert r.status_code == 202
            ids.append(r.json()["id"])
        wait_until(lambda: waiting(srv) == 1, "second never waited")
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_log("Received SIGTERM")
        # a fresh connection: shutdown closes idle keep-alive ones, the session's among them
        late = requests.post(srv.url + "/predictions", json={"input": {"tag": "late"}})
        assert late.status_code == 503
        open(gate, "w").close()
        assert srv.proc.wait(30 * SLOW) == 0
        assert [rx.wait_terminal(i)["status"] for i in ids] == ["succeeded", "succeeded"]
        assert ran(log) == ["one", "two"]
    finally:
        rx.close()


def test_depth_zero_keeps_409(make_server, env):
    gate, log = env
    s = make_server(code=PREDICTOR)
    results = {}
    t = start_sync(s, results, "running", gate, log)
    wait_until(lambda: ran(log) == ["running"], "never started")
    assert s.health()["status"] == "BUSY"
    assert s.predict({"tag": "x"}).status_code == 409
    open(gate, "w").close()
    t.join(30 * SLOW)
