"""Server-sent events (docs/http-api.md#server-sent-events): 406 without a streaming schema, the event sequence,
live delivery (each chunk reaches the client before the next is produced), replay to a
PUT attach, truncated replay, cancel when the last subscriber of an SSE-created prediction
leaves, and trainings refusing SSE."""

import json
import socket
import time
import uuid

import pytest
import requests

from conftest import SLOW, RawConn, raw_request
from receivers import make_receiver  # noqa: F401 (fixture)

PREDICTOR = """
import os
import time

from coglet import _sdk


def wait_for(path, what):
    deadline = time.time() + 15
    while not os.path.exists(path):
        if time.time() > deadline:
            raise RuntimeError(what + " never came")
        time.sleep(0.01)


class Predictor:
    def predict(self, n: int = 3, gate_dir: str = "", fail: bool = False, quiet: bool = False):
        if not quiet:
            print("starting")
            _sdk.current_scope().record_metric("temperature", 0.7)
        for i in range(n):
            yield "chunk %d" % i
            if gate_dir:
                wait_for(os.path.join(gate_dir, "go-%d" % i), "the ack of chunk %d" % i)
        if fail:
            raise ValueError("sse boom")
"""

SCHEMA = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "paths": {"/predictions": {"post": {"summary": "Predict", "x-cog-streaming": True}}},
    "components": {
        "schemas": {
            "Input": {
                "title": "Input",
                "type": "object",
                "properties": {
                    "n": {"title": "N", "type": "integer", "default": 3, "x-order": 0},
                    "gate_dir": {"title": "Gate Dir", "type": "string", "default": "", "x-order": 1},
                    "fail": {"title": "Fail", "type": "boolean", "default": False, "x-order": 2},
                    "quiet": {"title": "Quiet", "type": "boolean", "default": False, "x-order": 3},
                },
            },
            "Output": {"title": "Output", "type": "array", "items": {"type": "string"},
                       "x-cog-array-type": "iterator"},
        }
    },
}
NOT_STREAMING_SCHEMA = json.loads(json.dumps(SCHEMA))
del NOT_STREAMING_SCHEMA["paths"]["/predictions"]["post"]["x-cog-streaming"]

NO_STREAM_406 = (
    '{"error":"This model does not support streaming responses. '
    'Add @cog.streaming to predict() to enable SSE."}'
)
TRAINING_406 = '{"error":"Training endpoints do not support streaming responses."}'
SSE_HEADERS = {"Accept": "text/event-stream"}


class SSE:
    """One SSE request over a raw socket; next_event() returns (recv time, name, data)."""

    def __init__(self, port, method, path, body=None, headers=None):
        self.conn = RawConn(port, timeout=30)
        hdrs = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        hdrs.update(headers or {})
        self.conn.send(raw_request(method, path, json.dumps(body if body is not None else {}), hdrs))
        self.status, _, self.headers = self.conn.read_head()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.text = b""
        self.ended = False
        self.events = []

    def close(self):
        self.conn.close()

    def _read_more(self):
        if self.chunked:
            size = int(self.conn.read_until(b"\r\n").split(b";")[0].strip(), 16)
            if size == 0:
                self.conn.read_until(b"\r\n")
                self.ended = True
                return
            self.text += self.conn.read_exact(size)
            self.conn.read_exact(2)
        else:
            try:
                self.conn._fill()
            except ConnectionError:
                self.ended = True
            self.text += self.conn.buf
            self.conn.buf = b""

    def next_event(self):
        while True:
            while b"\n\n" in self.text:
                block, self.text = self.text.split(b"\n\n", 1)
                name, data = None, []
                for line in block.decode("utf-8").split("\n"):
                    if line.startswith(":"):
                        continue
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip(" "))
                if name is None and not data:
                    continue  # keep-alive comment
                ev = (time.time(), name, json.loads("\n".join(data)))
                self.events.append(ev)
                return ev
            if self.ended:
                return None
            self._read_more()

    def until(self, pred):
        """Read events until pred(name, data); returns that event."""
        assert self.status == 200, "not a stream: HTTP %d" % self.status
        while True:
            ev = self.next_event()
            assert ev is not None, "stream ended first; got %r" % [(e[1], e[2]) for e in self.events]
            if pred(ev[1], ev[2]):
                return ev

    def rest(self):
        """Every remaining event until the stream ends."""
        out = []
        while True:
            ev = self.next_event()
            if ev is None:
                return out
            out.append(ev)


@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server(code=PREDICTOR, files={".cog/openapi_schema.json": SCHEMA})
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.fixture
def gate_dir(tmp_path):
    d = tmp_path / ("gates-" + uuid.uuid4().hex)
    d.mkdir()
    return d


def go(gate_dir, i):
    (gate_dir / ("go-%d" % i)).write_text("")


def names(events):
    return [e[1] for e in events]


# ---- 406 ----


def test_no_schema_406(make_server):
    s = make_server(code=PREDICTOR)
    r = s.post("/predictions", {"input": {"n": 1}}, headers=SSE_HEADERS)
    assert r.status_code == 406
    assert r.text == NO_STREAM_406
    assert r.headers["Content-Type"].startswith("application/json")
    r = s.put("/predictions/x", {"input": {"n": 1}}, headers=SSE_HEADERS)
    assert (r.status_code, r.text) == (406, NO_STREAM_406)
    r = s.post("/trainings", {"input": {}}, headers=SSE_HEADERS)
    assert (r.status_code, r.text) == (406, TRAINING_406)
    # the same request without Accept streams nothing and works
    assert s.predict({"n": 2}).json()["output"] == ["chunk 0", "chunk 1"]


def test_schema_without_streaming_flag_406(make_server):
    s = make_server(code=PREDICTOR, files={".cog/openapi_schema.json": NOT_STREAMING_SCHEMA})
    r = s.post("/predictions", {"input": {"n": 1}}, headers={"Accept": "application/json, text/event-stream"})
    assert (r.status_code, r.text) == (406, NO_STREAM_406)


def test_trainings_sse_406(srv):
    for method, path in (("post", "/trainings"), ("put", "/trainings/t-sse")):
        r = getattr(srv, method)(path, {"input": {"n": 1}}, headers=SSE_HEADERS)
        assert r.status_code == 406, r.text
        assert r.text == TRAINING_406
    # a PUT refuses SSE before anything else, even a mismatched id
    r = srv.put("/trainings/t-sse", {"id": "other", "input": {}}, headers=SSE_HEADERS)
    assert (r.status_code, r.text) == (406, TRAINING_406)
    assert srv.health()["status"] == "READY"


# ---- the stream ----


def test_event_sequence_and_end(srv):
    st = SSE(srv.port, "POST", "/predictions", {"id": "sse-seq", "input": {"n": 3}})
    assert st.status == 200
    assert st.headers["content-type"].startswith("text/event-stream")
    assert st.headers.get("cache-control") == "no-cache"
    events = st.rest()
    st.close()
    assert names(events) == ["start", "log", "metric", "output", "output", "output", "completed"], events
    data = [e[2] for e in events]
    assert data[0] == {"id": "sse-seq", "status": "processing"}
    assert data[1] == {"data": "starting\n", "source": "stdout"}
    assert data[2] == {"mode": "replace", "name": "temperature", "value": 0.7}
    assert data[3:6] == [{"chunk": "chunk %d" % i, "index": i} for i in range(3)]
    done = data[6]
    assert done["id"] == "sse-seq"
    assert done["status"] == "succeeded"
    assert done["output"] == ["chunk 0", "chunk 1", "chunk 2"]
    assert done["logs"] == "starting\n"
    assert done["metrics"]["temperature"] == 0.7
    assert isinstance(done["metrics"]["predict_time"], float)
    assert "input" not in done
    srv.wait_status("READY")


def test_sse_event_wire_format(srv):
    """`event: {name}\\ndata: {compact sorted JSON}\\n\\n`, nothing else."""
    st = SSE(srv.port, "POST", "/predictions", {"input": {"n": 1, "quiet": True}})
    raw = b""
    while not st.ended:
        st._read_more()
    raw = st.text
    st.close()
    blocks = raw.decode().split("\n\n")
    assert blocks[-1] == ""
    for block in blocks[:-1]:
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        payload = lines[1][6:]
        assert payload == json.dumps(json.loads(payload), separators=(",", ":"), sort_keys=True)


def test_failed_prediction_stream(srv):
    st = SSE(srv.port, "POST", "/predictions", {"input": {"n": 1, "fail": True, "quiet": True}})
    events = st.rest()
    st.close()
    assert names(events) == ["start", "output", "completed"], events
    done = events[-1][2]
    assert done["status"] == "failed"
    assert "ValueError: sse boom" in done["error"]
    assert done["output"] == ["chunk 0"]  # partial outputs stay an array
    srv.wait_status("READY")


def test_sse_wins_over_prefer(srv):
    st = SSE(srv.port, "POST", "/predictions", {"input": {"n": 1, "quiet": True}},
             headers={"Prefer": "respond-async", "Accept": "application/json;q=0.5, text/event-stream;q=1"})
    assert st.status == 200
    assert names(st.rest()) == ["start", "output", "completed"]
    st.close()
    srv.wait_status("READY")


def test_accept_match_is_case_sensitive(srv):
    r = srv.post("/predictions", {"input": {"n": 1, "quiet": True}}, headers={"Accept": "Text/Event-Stream"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["output"] == ["chunk 0"]


def test_each_chunk_arrives_before_the_next_is_produced(srv, gate_dir):
    """The predictor yields chunk i+1 only after the test has seen chunk i and created
    go-i: a server that buffers chunks deadlocks this, and the predictor then fails."""
    n = 5
    st = SSE(srv.port, "POST", "/predictions", {"id": "sse-live", "input": {"n": n, "gate_dir": str(gate_dir)}})
    assert st.status == 200
    seen, acked = [], []
    for i in range(n):
        t, _, data = st.until(lambda name, d: name in ("output", "completed"))
        assert data == {"chunk": "chunk %d" % i, "index": i}, data
        seen.append(t)
        go(gate_dir, i)
        acked.append(time.time())
    done = st.until(lambda name, d: name == "completed")[2]
    assert st.rest() == []
    st.close()
    assert done["status"] == "succeeded", done
    assert done["output"] == ["chunk %d" % i for i in range(n)]
    for i in range(n - 1):
        assert seen[i] <= acked[i] <= seen[i + 1]
    srv.wait_status("READY")


def test_replay_to_put_attach_then_live(srv, gate_dir):
    pid = "sse-replay"
    a = SSE(srv.port, "POST", "/predictions", {"id": pid, "input": {"n": 2, "gate_dir": str(gate_dir)}})
    a.until(lambda name, d: name == "output")
    before = [(e[1], e[2]) for e in a.events]
    assert [n for n, _ in before] == ["start", "log", "metric", "output"]
    # attach: the input of the PUT is ignored, the history is replayed
    b = SSE(srv.port, "PUT", "/predictions/" + pid, {"input": {"n": 99}})
    assert b.status == 200
    assert b.headers["content-type"].startswith("text/event-stream")
    replayed = [b.next_event() for _ in range(4)]
    assert [(e[1], e[2]) for e in replayed] == before
    go(gate_dir, 0)  # now live: both get output 1
    for st in (a, b):
        assert st.until(lambda name, d: name == "output")[2] == {"chunk": "chunk 1", "index": 1}
    go(gate_dir, 1)
    for st in (a, b):
        done = st.until(lambda name, d: name == "completed")[2]
        assert done["status"] == "succeeded" and done["output"] == ["chunk 0", "chunk 1"]
        assert st.rest() == []
        st.close()
    srv.wait_status("READY")


def test_json_put_attach_to_sse_prediction(srv, gate_dir):
    pid = "sse-json-attach"
    a = SSE(srv.port, "POST", "/predictions", {"id": pid, "input": {"n": 1, "gate_dir": str(gate_dir)}})
    a.until(lambda name, d: name == "output")
    r = srv.put("/predictions/" + pid, {"input": {}})
    assert r.status_code == 202
    state = r.json()
    assert state["status"] == "processing" and state["output"] == ["chunk 0"]
    assert state["input"]["n"] == 1 and state["input"]["gate_dir"] == str(gate_dir), state
    go(gate_dir, 0)
    assert a.until(lambda name, d: name == "completed")[2]["status"] == "succeeded"
    a.close()
    srv.wait_status("READY")


def test_replay_truncated_capacity_2(make_server, gate_dir):
    s = make_server(code=PREDICTOR, files={".cog/openapi_schema.json": SCHEMA},
                    env={"COG_STREAM_HISTORY_CAPACITY": "2"})
    pid = "sse-trunc"
    a = SSE(s.port, "POST", "/predictions", {"id": pid, "input": {"n": 4, "gate_dir": str(gate_dir),
                                                                    "quiet": True}})
    for i in range(4):
        assert a.until(lambda name, d: name == "output")[2]["index"] == i
        if i < 3:
            go(gate_dir, i)
    assert names(a.events) == ["start"] + ["output"] * 4  # 5 events, 2 kept
    b = SSE(s.port, "PUT", "/predictions/" + pid, {})
    assert b.status == 200
    events = b.rest()
    b.close()
    assert [(e[1], e[2]) for e in events] == [
        ("error", {"error": "SSE stream replay truncated; events were dropped", "skipped": 3})
    ]
    go(gate_dir, 3)
    done = a.until(lambda name, d: name == "completed")[2]
    assert done["status"] == "succeeded", done
    a.close()
    s.wait_status("READY")


def test_capacity_0_joiner_gets_live_events(make_server, gate_dir):
    """Capacity 0 disables replay: a subscriber that joins a running prediction gets no
    history and no "replay truncated" error, only the live events from the moment it joins,
    through `completed`."""
    s = make_server(code=PREDICTOR, files={".cog/openapi_schema.json": SCHEMA},
                    env={"COG_STREAM_HISTORY_CAPACITY": "0"})
    a = SSE(s.port, "POST", "/predictions", {"id": "cap0", "input": {"n": 2, "gate_dir": str(gate_dir),
                                                                      "quiet": True}})
    a.until(lambda name, d: name == "output")
    b = SSE(s.port, "PUT", "/predictions/cap0", {})
    assert b.status == 200
    go(gate_dir, 0)  # output 1 happens after b joined
    live = b.next_event()
    assert (live[1], live[2]) == ("output", {"chunk": "chunk 1", "index": 1}), live
    go(gate_dir, 1)
    rest = b.rest()
    assert names(rest) == ["completed"], rest
    assert rest[0][2]["status"] == "succeeded" and rest[0][2]["output"] == ["chunk 0", "chunk 1"]
    assert a.until(lambda name, d: name == "completed")[2]["status"] == "succeeded"
    a.close()
    b.close()


# ---- disconnects ----


def test_last_subscriber_leaving_cancels_sse_prediction(srv, gate_dir, make_receiver):
    rx = make_receiver()
    pid = "sse-drop"
    a = SSE(srv.port, "POST", "/predictions", {"id": pid, "input": {"n": 2, "gate_dir": str(gate_dir)},
                                               "webhook": rx.url})
    a.until(lambda name, d: name == "output")
    b = SSE(srv.port, "PUT", "/predictions/" + pid, {})
    b.until(lambda name, d: name == "output")  # replayed up to chunk 0
    # one of two subscribers leaves: the prediction goes on
    b.close()
    time.sleep(0.3)
    r = srv.put("/predictions/" + pid, {})
    assert r.status_code == 202 and r.json()["status"] == "processing", r.text
    assert rx.terminal(pid) == []
    # the last one leaves: canceled
    a.conn.sock.shutdown(socket.SHUT_RDWR)
    a.close()
    done = rx.wait_terminal(pid, timeout=10)
    assert done["status"] == "canceled", done
    srv.wait_status("READY")
    assert srv.predict({"n": 1, "quiet": True}).json()["output"] == ["chunk 0"]


@pytest.mark.parametrize("attempt", range(4))
def test_sse_client_gone_right_after_sending(srv, gate_dir, make_receiver, attempt):
    """The client sends its SSE request and closes at once (often before the server has
    written `start`). The prediction, if created, must end canceled; the predictor waits
    for gates that only open after the test has looked, so a lost cancel shows up as
    `succeeded`."""
    rx = make_receiver()
    pid = "sse-gone-%d" % attempt
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.sendall(raw_request("POST", "/predictions",
                             json.dumps({"id": pid, "input": {"n": 2, "gate_dir": str(gate_dir)}, "webhook": rx.url}),
                             {"Content-Type": "application/json", "Accept": "text/event-stream"}))
    sock.close()
    time.sleep(0.3)
    try:
        rx.wait_terminal(pid, timeout=3)
    except AssertionError:
        pass
    finally:
        go(gate_dir, 0)
        go(gate_dir, 1)
    srv.wait_status("READY", timeout=10)
    if rx.for_id(pid):  # it was created, so it must have been canceled
        done = rx.wait_terminal(pid)
        assert done["status"] == "canceled", (done, [l for l in srv.messages() if pid in str(l) or "SSE" in str(l)])


def test_cancel_endpoint_ends_sse_stream(srv, gate_dir):
    st = SSE(srv.port, "POST", "/predictions", {"id": "sse-cancel", "input": {"n": 2, "gate_dir": str(gate_dir)}})
    st.until(lambda name, d: name == "output")
    r = srv.post("/predictions/sse-cancel/cancel")
    assert (r.status_code, r.text) == (200, "{}")
    done = st.until(lambda name, d: name == "completed")[2]
    assert done["status"] == "canceled", done
    assert done["output"] == ["chunk 0"]
    assert st.rest() == []
    st.close()
    srv.wait_status("READY")


def test_sse_subscriber_leaving_does_not_cancel_async_prediction(srv, gate_dir, make_receiver):
    rx = make_receiver()
    pid = "sse-async-attach"
    r = srv.post("/predictions", {"id": pid, "input": {"n": 1, "gate_dir": str(gate_dir)}, "webhook": rx.url},
                 headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    b = SSE(srv.port, "PUT", "/predictions/" + pid, {})
    assert b.status == 200
    b.until(lambda name, d: name == "output")
    b.close()
    time.sleep(0.3)
    go(gate_dir, 0)
    done = rx.wait_terminal(pid, timeout=10)
    assert done["status"] == "succeeded", done
    srv.wait_status("READY")


def test_sse_prediction_sends_webhooks(srv, make_receiver):
    rx = make_receiver()
    st = SSE(srv.port, "POST", "/predictions", {"id": "sse-wh", "input": {"n": 2, "quiet": True},
                                                "webhook": rx.url})
    events = st.rest()
    st.close()
    assert names(events)[-1] == "completed"
    done = rx.wait_terminal("sse-wh")
    assert done["status"] == "succeeded" and done["output"] == ["chunk 0", "chunk 1"]
    assert done == events[-1][2]


def test_next_request_after_completed_never_409(srv):
    codes = []
    for i in range(30):
        st = SSE(srv.port, "POST", "/predictions", {"input": {"n": 1, "quiet": True}})
        codes.append(st.status)
        if st.status == 200:
            assert names(st.rest()) == ["start", "output", "completed"]
        st.close()
    assert codes.count(409) == 0, codes


def test_put_sse_to_unknown_id_starts_stream(srv):
    st = SSE(srv.port, "PUT", "/predictions/sse-put-new", {"input": {"n": 1, "quiet": True}})
    assert st.status == 200
    events = st.rest()
    st.close()
    assert names(events) == ["start", "output", "completed"]
    assert events[0][2] == {"id": "sse-put-new", "status": "processing"}


def test_sse_at_capacity_409(srv, gate_dir):
    a = SSE(srv.port, "POST", "/predictions", {"input": {"n": 1, "gate_dir": str(gate_dir), "quiet": True}})
    a.until(lambda name, d: name == "output")
    r = requests.post(srv.url + "/predictions", json={"input": {"n": 1}}, headers=SSE_HEADERS, timeout=10)
    assert r.status_code == 409
    assert r.text == '{"error":"At capacity - all prediction slots busy","status":"failed"}'
    go(gate_dir, 0)
    a.rest()
    a.close()
    srv.wait_status("READY")
