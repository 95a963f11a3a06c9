"""Shutdown (docs/http-api.md#shutdown): SIGTERM and POST /shutdown exit 0;
--await-explicit-shutdown ignores SIGTERM; predictions accepted before the shutdown finish
and their terminal webhook is delivered before the process exits, or they are canceled
after COG_SHUTDOWN_GRACE seconds; new create requests meanwhile get 503."""

import json
import os
import signal
import threading
import time
import uuid

import pytest
import requests

from conftest import HOLD, SLOW, RawConn, raw_request
from receivers import make_receiver  # noqa: F401 (fixture)

PREDICTOR = HOLD + """


class Predictor:
    def predict(self, text: str = "x", gate: str = "", started: str = "", forever: bool = False):
        hold("", started)
        if forever:
            while True:
                time.sleep(0.01)
        hold(gate, "")
        return "done:" + text
"""

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def gate(tmp_path):
    tag = uuid.uuid4().hex
    return str(tmp_path / ("gate-" + tag)), str(tmp_path / ("started-" + tag))


def wait_file(path, timeout=10):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "predictor never created %s" % path
        time.sleep(0.01)


def wait_exit(s, timeout=10):
    try:
        return s.proc.wait(timeout=timeout * SLOW)
    except Exception:
        raise AssertionError("server did not exit:\n" + s.log_text()[-3000:])


def test_sigterm_idle_exits_0(make_server):
    s = make_server(code=PREDICTOR)
    s.proc.send_signal(signal.SIGTERM)
    assert wait_exit(s) == 0
    time.sleep(0.1)
    msgs = s.messages()
    assert "Received SIGTERM, shutting down..." in msgs
    assert "Server shutdown complete" in msgs


def test_sigint_idle_exits_0(make_server):
    s = make_server(code=PREDICTOR)
    s.proc.send_signal(signal.SIGINT)
    assert wait_exit(s) == 0


def test_post_shutdown(make_server):
    s = make_server(code=PREDICTOR)
    r = s.post("/shutdown")
    assert r.status_code == 200
    assert r.text == "{}"
    assert wait_exit(s) == 0
    time.sleep(0.1)
    assert "Shutdown requested via /shutdown endpoint..." in s.messages()
    assert not s.worker_pids()


def test_await_explicit_shutdown_ignores_sigterm(make_server):
    s = make_server(code=PREDICTOR, args=["--await-explicit-shutdown"])
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert s.proc.poll() is None, "SIGTERM stopped a server started with --await-explicit-shutdown"
    assert s.health()["status"] == "READY"
    assert s.predict({"text": "still"}).json()["output"] == "done:still"
    r = s.post("/shutdown")
    assert (r.status_code, r.text) == (200, "{}")
    assert wait_exit(s) == 0


def test_inflight_async_finishes_and_webhook_delivered_before_exit(make_server, make_receiver, gate):
    g, started = gate
    s = make_server(code=PREDICTOR)
    rx = make_receiver()
    r = s.post("/predictions", {"id": "sd-async", "input": {"text": "a", "gate": g, "started": started},
                                "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202
    wait_file(started)
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("Received SIGTERM")
    time.sleep(0.3)
    assert s.proc.poll() is None, "exited with a prediction in flight:\n" + s.log_text()[-2000:]
    # new work is refused meanwhile
    r = requests.post(s.url + "/predictions", json={"input": {"text": "new"}}, timeout=10)
    assert r.status_code == 503, r.text
    assert r.json()["status"] == "failed"
    r = requests.post(s.url + "/predictions", json={"input": {"text": "new"}}, headers=ASYNC, timeout=10)
    assert r.status_code == 503, r.text
    r = requests.put(s.url + "/predictions/sd-new", json={"input": {}}, timeout=10)
    assert r.status_code == 503, r.text
    assert rx.terminal("sd-async") == []
    assert requests.get(s.url + "/health-check", timeout=10).status_code == 200
    open(g, "w").close()
    assert wait_exit(s) == 0
    # the webhook was answered 2xx before the process went away
    done = rx.terminal("sd-async")
    assert len(done) == 1, rx.snapshot()
    assert done[0].body["status"] == "succeeded"
    assert done[0].body["output"] == "done:a"


def test_inflight_sync_gets_its_response(make_server, gate):
    g, started = gate
    s = make_server(code=PREDICTOR)
    out = {}

    def run():
        out["r"] = requests.post(s.url + "/predictions", json={"input": {"text": "s", "gate": g,
                                                                         "started": started}},
                                 timeout=30 * SLOW)

    t = threading.Thread(target=run)
    t.start()
    wait_file(started)
    s.post("/shutdown")
    time.sleep(0.3)
    assert s.proc.poll() is None
    open(g, "w").close()
    t.join(15 * SLOW)
    assert out["r"].status_code == 200
    assert out["r"].json()["status"] == "succeeded"
    assert out["r"].json()["output"] == "done:s"
    assert wait_exit(s) == 0


def test_terminal_webhook_retries_finish_before_exit(make_server, make_receiver, gate):
    """A terminal webhook that needs retries (500, 500, then 200) is still delivered."""
    g, started = gate
    s = make_server(code=PREDICTOR, env={"COGLET_WEBHOOK_RETRY_BASE": "0.01"})
    rx = make_receiver([500, 500, 200])
    s.post("/predictions", {"id": "sd-retry", "input": {"gate": g, "started": started}, "webhook": rx.url,
                            "webhook_events_filter": ["completed"]}, headers=ASYNC)
    wait_file(started)
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("Received SIGTERM")
    open(g, "w").close()
    assert wait_exit(s) == 0
    hits = rx.terminal("sd-retry")
    assert len(hits) == 3, [h.body for h in hits]


def test_sse_stream_in_flight_completes_before_exit(make_server, gate):
    g, started = gate
    schema = {"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"},
              "paths": {"/predictions": {"post": {"x-cog-streaming": True}}},
              "components": {"schemas": {"Input": {"type": "object", "title": "Input", "properties": {
                  "text": {"type": "string"}, "gate": {"type": "string"}, "started": {"type": "string"}}}}}}
    s = make_server(code=PREDICTOR, files={".cog/openapi_schema.json": schema})
    with RawConn(s.port) as conn:
        conn.send(raw_request("POST", "/predictions", json.dumps({"input": {"text": "e", "gate": g,
                                                                             "started": started}}),
                              {"Content-Type": "application/json", "Accept": "text/event-stream"}))
        wait_file(started)
        s.proc.send_signal(signal.SIGTERM)
        s.wait_log("Received SIGTERM")
        time.sleep(0.2)
        assert s.proc.poll() is None
        open(g, "w").close()
        resp = conn.read_response()
    assert resp.status == 200
    text = resp.body.decode()
    assert "event: start" in text and text.rstrip().split("\n")[-2] == "event: completed", text
    assert '"status":"succeeded"' in text
    assert wait_exit(s) == 0


def test_grace_expires_prediction_canceled(make_server, make_receiver, gate):
    g, started = gate
    s = make_server(code=PREDICTOR, env={"COG_SHUTDOWN_GRACE": "1"})
    rx = make_receiver()
    s.post("/predictions", {"id": "sd-grace", "input": {"forever": True, "started": started},
                            "webhook": rx.url}, headers=ASYNC)
    wait_file(started)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    assert wait_exit(s, timeout=15) == 0
    assert time.time() - t0 >= 0.9, "did not wait for the grace period"
    done = rx.terminal("sd-grace")
    assert len(done) == 1, rx.snapshot()
    assert done[0].body["status"] == "canceled", done[0].body


def test_grace_expires_sync_client_gets_canceled(make_server, gate):
    g, started = gate
    s = make_server(code=PREDICTOR, env={"COG_SHUTDOWN_GRACE": "1"})
    out = {}

    def run():
        out["r"] = requests.post(s.url + "/predictions", json={"input": {"forever": True, "started": started}},
                                 timeout=30 * SLOW)

    t = threading.Thread(target=run)
    t.start()
    wait_file(started)
    s.proc.send_signal(signal.SIGTERM)
    t.join(15 * SLOW)
    assert "r" in out, "sync client never answered"
    assert out["r"].status_code == 200
    assert out["r"].json()["status"] == "canceled", out["r"].text
    assert wait_exit(s) == 0


def test_second_shutdown_request_harmless(make_server, gate):
    g, started = gate
    s = make_server(code=PREDICTOR)
    s.post("/predictions", {"input": {"gate": g, "started": started}}, headers=ASYNC)
    wait_file(started)
    assert s.post("/shutdown").status_code == 200
    time.sleep(0.2)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert s.proc.poll() is None
    open(g, "w").close()
    assert wait_exit(s) == 0
