"""Capacity (docs/http-api.md#capacity): every slot busy → 409 with the exact body and
health BUSY; no queueing; and (our improvement over the Rust coglet) the slot is back before
a sync response is written, so the next request never sees 409."""

import os
import threading
import time
import uuid

import pytest

from conftest import HOLD, SLOW
from receivers import make_receiver  # noqa: F401 (fixture)

BUSY_BODY = '{"error":"At capacity - all prediction slots busy","status":"failed"}'

SYNC = HOLD + """


class Predictor:
    def predict(self, text: str = "x", gate: str = "", started: str = ""):
        hold(gate, started)
        return text
"""

ASYNC_PREDICTOR = """
import asyncio
import os
import time


class Predictor:
    async def predict(self, text: str = "x", gate: str = "", started: str = ""):
        if started:
            open(started, "w").close()
        deadline = time.time() + 30
        while gate and not os.path.exists(gate):
            if time.time() > deadline:
                raise RuntimeError("gate never opened")
            await asyncio.sleep(0.01)
        return text
"""


@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server(code=SYNC)
    assert s.health()["status"] == "READY", s.log_text()
    return s


def paths(tmp_path):
    tag = uuid.uuid4().hex
    return str(tmp_path / ("gate-" + tag)), str(tmp_path / ("started-" + tag))


def wait_file(path, timeout=10):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "predictor never created %s" % path
        time.sleep(0.01)


def assert_409(r):
    assert r.status_code == 409, r.text
    assert r.text == BUSY_BODY
    assert r.headers["Content-Type"].startswith("application/json")


def test_busy_slot_409_and_health_busy(srv, tmp_path):
    gate, started = paths(tmp_path)
    out = {}

    def run():
        out["r"] = srv.predict({"text": "held", "gate": gate, "started": started})

    t = threading.Thread(target=run)
    t.start()
    wait_file(started)
    h = srv.health()
    assert h["status"] == "BUSY", h
    assert_409(srv.predict({"text": "sync"}))
    assert_409(srv.post("/predictions", {"input": {}}, headers={"Prefer": "respond-async"}))
    assert_409(srv.put("/predictions/new-id", {"input": {}}))
    assert_409(srv.post("/trainings", {"input": {}}))
    assert srv.health()["status"] == "BUSY"
    open(gate, "w").close()
    t.join(15 * SLOW)
    assert out["r"].json() == {**out["r"].json(), "status": "succeeded", "output": "held"}
    # no queueing: the refused requests never ran, and the slot is free again
    assert srv.health()["status"] == "READY"
    assert srv.predict({"text": "after"}).json()["output"] == "after"


def test_200_sequential_sync_no_409(srv):
    codes = []
    for i in range(200):
        r = srv.predict({"text": "n%d" % i})
        codes.append(r.status_code)
        if r.status_code == 200:
            assert r.json()["output"] == "n%d" % i
    assert codes.count(409) == 0, "409s at positions %r" % [i for i, c in enumerate(codes) if c == 409]
    assert set(codes) == {200}


def test_sequential_sync_new_connections_no_409(srv):
    import requests

    codes = []
    for i in range(50):
        r = requests.post(srv.url + "/predictions", json={"input": {"text": "c%d" % i}}, timeout=30 * SLOW,
                          headers={"Connection": "close"})
        codes.append(r.status_code)
    assert codes.count(409) == 0, codes


def test_health_ready_right_after_sync_response(srv):
    for i in range(30):
        assert srv.predict({"text": "h"}).status_code == 200
        h = srv.health()
        assert h["status"] == "READY", (i, h)


def test_concurrency_two_async_predictor(make_server, make_receiver, tmp_path):
    s = make_server(code=ASYNC_PREDICTOR, env={"COG_MAX_CONCURRENCY": "2"})
    assert s.health()["status"] == "READY", s.log_text()
    g1, s1 = paths(tmp_path)
    g2, s2 = paths(tmp_path)
    ra = s.post("/predictions", {"input": {"text": "a", "gate": g1, "started": s1}},
                headers={"Prefer": "respond-async"})
    assert ra.status_code == 202
    wait_file(s1)
    assert s.health()["status"] == "READY"  # one of two slots taken
    rx = make_receiver()
    rb = s.post("/predictions", {"id": "b", "input": {"text": "b", "gate": g2, "started": s2}, "webhook": rx.url},
                headers={"Prefer": "respond-async"})
    assert rb.status_code == 202
    wait_file(s2)
    assert s.health()["status"] == "BUSY"
    assert_409(s.predict({"text": "c"}))
    open(g1, "w").close()
    s.wait_status("READY")
    assert s.predict({"text": "d"}).json()["output"] == "d"
    open(g2, "w").close()
    assert rx.wait_terminal("b")["output"] == "b"
    # both slots free now (the terminal webhook is sent after the slot went back):
    # two sync requests at once both run
    results = []

    def go(i):
        results.append(s.predict({"text": "p%d" % i}).status_code)

    for _ in range(20):
        ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(15 * SLOW)
    assert results.count(409) == 0, results
