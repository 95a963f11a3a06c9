"""Async predictions (docs/http-api.md#response-modes) and idempotent PUT
(docs/http-api.md#put-create-or-attach): `Prefer: respond-async`
answers 202 at once while the prediction runs in the background; PUT attaches to an
in-flight id (202 + state + input, never a second run) and starts a new prediction for a
finished one."""

import json
import os
import re
import time
import uuid

import pytest

from conftest import HOLD, SLOW
from receivers import make_receiver  # noqa: F401 (fixture)

GATED = HOLD + """


class Predictor:
    def predict(self, text: str = "x", gate: str = "", started: str = "", runs: str = ""):
        if runs:
            with open(runs, "a") as f:
                f.write(text + "\\n")
        print("begin " + text)
        hold(gate, started)
        return "out:" + text
"""

ASYNC = {"Prefer": "respond-async"}
PUT_MISMATCH = {
    "detail": [
        {"loc": ["body", "id"], "msg": "prediction ID must match the ID supplied in the URL", "type": "value_error"}
    ]
}


@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server(code=GATED)
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.fixture
def files(tmp_path):
    """Fresh absolute paths for gate / started / runs files."""

    class F:
        def __init__(self):
            self.gate = str(tmp_path / ("gate-" + uuid.uuid4().hex))
            self.started = str(tmp_path / ("started-" + uuid.uuid4().hex))
            self.runs = str(tmp_path / ("runs-" + uuid.uuid4().hex))

        def open_gate(self):
            open(self.gate, "w").close()

        def run_lines(self):
            if not os.path.exists(self.runs):
                return []
            with open(self.runs) as f:
                return f.read().splitlines()

    return F()


def wait_file(path, timeout=10):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "predictor never created %s" % path
        time.sleep(0.01)


def test_async_202_at_once_then_runs_in_background(srv, files, make_receiver):
    rx = make_receiver()
    r = srv.post(
        "/predictions", {"input": {"text": "bg", "gate": files.gate, "runs": files.runs}, "webhook": rx.url},
        headers=ASYNC)
    # The gate is still closed: the predictor cannot have finished, yet the answer is here.
    assert not os.path.exists(files.gate)
    assert r.status_code == 202, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"id", "status"}, body
    assert body["status"] == "starting"
    assert re.fullmatch(r"pred_[0-9a-f]+", body["id"]), body
    assert r.text == json.dumps(body, separators=(",", ":"), sort_keys=True)
    # it really runs in the background
    wait_file(files.runs)
    files.open_gate()
    done = rx.wait_terminal(body["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == "out:bg"
    assert "predict_time" in done["metrics"]
    assert files.run_lines() == ["bg"]
    srv.wait_status("READY")


def test_async_client_id_verbatim(srv, files, make_receiver):
    rx = make_receiver()
    r = srv.post("/predictions", {"id": "my-async-123", "input": {"text": "v"}, "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202, r.text
    assert r.json() == {"id": "my-async-123", "status": "starting"}
    done = rx.wait_terminal("my-async-123")
    assert done["output"] == "out:v"
    srv.wait_status("READY")


def test_generated_ids_unique(srv):
    ids = set()
    for _ in range(5):
        r = srv.post("/predictions", {"input": {"text": "u"}}, headers=ASYNC)
        assert r.status_code == 202, r.text
        ids.add(r.json()["id"])
        srv.wait_status("READY")
    assert len(ids) == 5, ids


def test_prefer_must_match_exactly(srv, files):
    """`respond-async, wait=5` is not async: the request waits for the result."""
    r = srv.post("/predictions", {"input": {"text": "w"}}, headers={"Prefer": "respond-async, wait=5"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["output"] == "out:w"


def test_put_id_mismatch_422(srv):
    for headers in ({}, ASYNC):
        r = srv.put("/predictions/abc", {"id": "xyz", "input": {}}, headers=headers)
        assert r.status_code == 422, r.text
        assert r.json() == PUT_MISMATCH
        assert r.text == json.dumps(PUT_MISMATCH, separators=(",", ":"))
    srv.wait_status("READY")


def test_put_async_client_id(srv, files, make_receiver):
    rx = make_receiver()
    r = srv.put("/predictions/put-async-1", {"input": {"text": "pa"}, "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202, r.text
    assert r.json() == {"id": "put-async-1", "status": "starting"}
    assert rx.wait_terminal("put-async-1")["output"] == "out:pa"
    srv.wait_status("READY")


@pytest.mark.parametrize("prefer", [None, "respond-async"])
def test_put_inflight_attaches_no_second_run(srv, files, make_receiver, prefer):
    rx = make_receiver()
    pid = "attach-%s" % (prefer or "sync")
    original = {"text": "first", "gate": files.gate, "started": files.started, "runs": files.runs}
    r = srv.put("/predictions/" + pid, {"input": original, "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202, r.text
    wait_file(files.started)
    headers = {"Prefer": prefer} if prefer else {}
    # A retry with another input: attaches, returns at once (the gate is still closed).
    for _ in range(3):
        r = srv.put("/predictions/" + pid, {"input": {"text": "second", "runs": files.runs}}, headers=headers)
        assert r.status_code == 202, r.text
        state = r.json()
        assert state["id"] == pid
        assert state["status"] == "processing", state
        assert state["input"] == original, state
        assert "begin first\n" in state["logs"] or state["logs"] == "", state
        assert "predict_time" not in state["metrics"], state
        assert "error" not in state and "output" not in state, state
    # a body id equal to the path is fine too
    r = srv.put("/predictions/" + pid, {"id": pid, "input": {"text": "third"}})
    assert r.status_code == 202, r.text
    assert r.json()["input"] == original
    files.open_gate()
    done = rx.wait_terminal(pid)
    assert done["status"] == "succeeded"
    assert done["output"] == "out:first"
    srv.wait_status("READY")
    assert files.run_lines() == ["first"], "the attached PUTs ran the predictor again"
    assert len(rx.terminal(pid)) == 1


def test_put_inflight_sse_without_streaming_406(srv, files):
    r = srv.put("/predictions/attach-sse", {"input": {"text": "s", "gate": files.gate, "started": files.started,
                                                      "runs": files.runs}}, headers=ASYNC)
    assert r.status_code == 202
    wait_file(files.started)
    r = srv.put("/predictions/attach-sse", {"input": {"text": "t", "runs": files.runs}},
                headers={"Accept": "text/event-stream"})
    assert r.status_code == 406, r.text
    assert r.json() == {"error": "This model does not support streaming responses. "
                                 "Add @cog.streaming to predict() to enable SSE."}
    files.open_gate()
    srv.wait_status("READY")
    assert files.run_lines() == ["s"]


def test_put_inflight_logs_visible(srv, files):
    r = srv.put("/predictions/attach-logs", {"input": {"text": "L", "gate": files.gate, "started": files.started}},
                headers=ASYNC)
    assert r.status_code == 202, r.text
    wait_file(files.started)
    deadline = time.time() + 10 * SLOW
    while True:
        state = srv.put("/predictions/attach-logs", {}).json()
        if state["logs"] == "begin L\n":
            break
        assert time.time() < deadline, state
        time.sleep(0.02)
    assert state["input"] == {"text": "L", "gate": files.gate, "started": files.started}
    files.open_gate()
    srv.wait_status("READY")


def test_put_inflight_while_at_capacity_is_202_not_409(srv, files):
    r = srv.put("/predictions/attach-busy", {"input": {"text": "b", "gate": files.gate, "started": files.started}},
                headers=ASYNC)
    assert r.status_code == 202
    wait_file(files.started)
    assert srv.health()["status"] == "BUSY"
    # a new id is refused, the in-flight one is attached to
    assert srv.put("/predictions/other-id", {"input": {}}, headers=ASYNC).status_code == 409
    r = srv.put("/predictions/attach-busy", {"input": {}})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "processing"
    files.open_gate()
    srv.wait_status("READY")


def test_put_finished_id_starts_new_prediction(srv, files):
    r = srv.put("/predictions/again-1", {"input": {"text": "one", "runs": files.runs}})
    assert r.status_code == 200, r.text
    assert r.json()["output"] == "out:one"
    r = srv.put("/predictions/again-1", {"input": {"text": "two", "runs": files.runs}})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "again-1"
    assert r.json()["status"] == "succeeded"
    assert r.json()["output"] == "out:two"
    assert files.run_lines() == ["one", "two"]
    # and async after a finished async one
    srv.put("/predictions/again-2", {"input": {"text": "three", "runs": files.runs}}, headers=ASYNC)
    srv.wait_status("READY")
    deadline = time.time() + 10 * SLOW
    while len(files.run_lines()) < 3:
        assert time.time() < deadline
        time.sleep(0.01)
    srv.wait_status("READY")
    r = srv.put("/predictions/again-2", {"input": {"text": "four", "runs": files.runs}}, headers=ASYNC)
    assert r.status_code == 202
    assert r.json() == {"id": "again-2", "status": "starting"}
    srv.wait_status("READY")
    deadline = time.time() + 10 * SLOW
    while len(files.run_lines()) < 4:
        assert time.time() < deadline
        time.sleep(0.01)
    assert files.run_lines() == ["one", "two", "three", "four"]


def test_async_at_capacity_409(srv, files):
    r = srv.post("/predictions", {"input": {"text": "c", "gate": files.gate, "started": files.started}},
                 headers=ASYNC)
    assert r.status_code == 202
    wait_file(files.started)
    r2 = srv.post("/predictions", {"input": {"text": "d"}}, headers=ASYNC)
    assert r2.status_code == 409, r2.text
    assert r2.json() == {"error": "At capacity - all prediction slots busy", "status": "failed"}
    files.open_gate()
    srv.wait_status("READY")
    r3 = srv.post("/predictions", {"input": {"text": "e"}})
    assert r3.json()["output"] == "out:e"
