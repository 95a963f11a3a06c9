"""Cancellation (docs/http-api.md#cancellation, docs/worker-protocol.md#cancellation): the
cancel route's answers, interrupting a busy Python loop, early cancels right after a PUT
(the Rust coglet loses them; we must not), and
sync clients that drop their connection."""

import json
import os
import socket
import threading
import time
import uuid

import pytest

from conftest import SLOW, RawConn, raw_request
from receivers import make_receiver  # noqa: F401 (fixture)

PREDICTOR = """
import os
import time


class Predictor:
    def predict(self, mode: str = "quick", started: str = "", steps: int = 300):
        if started:
            open(started, "w").close()
        if mode == "linger":
            # stays in flight for a second after the first cancel: a blocking sleep, which
            # a cancel cannot interrupt before it returns
            try:
                while True:
                    time.sleep(0.01)
            except BaseException:
                open(started + ".caught", "w").close()
                time.sleep(1.0)
                raise
        if mode == "busy":
            while True:
                pass
        if mode == "steps":
            # ~3 s in small sleeps: interruptible between steps
            for _ in range(steps):
                time.sleep(0.01)
            return "finished"
        if mode == "sleep":
            time.sleep(1.0)
            return "slept"
        return "quick"
"""

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server(code=PREDICTOR, env={"COG_THROTTLE_RESPONSE_INTERVAL": "0"})
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.fixture
def started(tmp_path):
    return str(tmp_path / ("started-" + uuid.uuid4().hex))


def wait_file(path, timeout=10):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "predictor never created %s" % path
        time.sleep(0.01)


def assert_next_prediction_works(srv):
    srv.wait_status("READY", timeout=10)
    r = srv.predict({"mode": "quick"})
    assert r.status_code == 200
    assert r.json()["status"] == "succeeded" and r.json()["output"] == "quick", r.text


def test_cancel_unknown_404_empty_object(srv):
    for path in ("/predictions/nope/cancel", "/trainings/nope/cancel"):
        r = srv.post(path)
        assert r.status_code == 404
        assert r.text == "{}"
        assert r.headers["Content-Type"].startswith("application/json")


def test_cancel_async_busy_loop(srv, started, make_receiver):
    rx = make_receiver()
    r = srv.post("/predictions", {"id": "busy-1", "input": {"mode": "busy", "started": started}, "webhook": rx.url},
                 headers=ASYNC)
    assert r.status_code == 202
    wait_file(started)
    r = srv.post("/predictions/busy-1/cancel")
    assert (r.status_code, r.text) == (200, "{}")
    r = srv.post("/predictions/busy-1/cancel")  # a repeat: 200 while in flight, 404 after
    assert r.status_code in (200, 404) and r.text == "{}", r.text
    done = rx.wait_terminal("busy-1", timeout=10)
    assert done["status"] == "canceled", done
    assert "output" not in done and "error" not in done
    assert "predict_time" in done["metrics"]
    assert len(rx.terminal("busy-1")) == 1
    srv.wait_status("READY")
    r = srv.post("/predictions/busy-1/cancel")
    assert (r.status_code, r.text) == (404, "{}")
    assert_next_prediction_works(srv)


def test_repeated_cancels_while_in_flight(srv, started, make_receiver):
    rx = make_receiver()
    r = srv.post("/predictions", {"id": "linger", "input": {"mode": "linger", "started": started},
                                  "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202
    wait_file(started)
    r = srv.post("/predictions/linger/cancel")
    assert (r.status_code, r.text) == (200, "{}")
    wait_file(started + ".caught")  # the cancel reached the predictor; it is still running
    for _ in range(3):
        r = srv.post("/predictions/linger/cancel")
        assert (r.status_code, r.text) == (200, "{}")
    assert rx.terminal("linger") == []
    done = rx.wait_terminal("linger", timeout=10)
    assert done["status"] == "canceled", done
    srv.wait_status("READY")
    r = srv.post("/predictions/linger/cancel")
    assert (r.status_code, r.text) == (404, "{}")
    assert_next_prediction_works(srv)


def test_cancel_percent_encoded_id(srv, started, make_receiver):
    rx = make_receiver()
    r = srv.put("/predictions/a%20b%2Fc", {"input": {"mode": "busy", "started": started}, "webhook": rx.url},
                headers=ASYNC)
    assert r.status_code == 202
    assert r.json()["id"] == "a b/c"
    wait_file(started)
    assert srv.post("/predictions/a%20b%2Fc/cancel").status_code == 200
    assert rx.wait_terminal("a b/c")["status"] == "canceled"
    assert_next_prediction_works(srv)


def test_cancel_sync_busy_loop(srv, started):
    out = {}

    def run():
        out["r"] = srv.post("/predictions", {"id": "busy-sync", "input": {"mode": "busy", "started": started}},
                            timeout=30 * SLOW)

    t = threading.Thread(target=run)
    t.start()
    wait_file(started)
    r = srv.post("/predictions/busy-sync/cancel")
    assert (r.status_code, r.text) == (200, "{}")
    t.join(15 * SLOW)
    assert not t.is_alive(), "sync request never answered after cancel"
    body = out["r"].json()
    assert out["r"].status_code == 200
    assert body["status"] == "canceled", body
    assert body["logs"] == ""
    assert "output" not in body and "error" not in body
    assert isinstance(body["metrics"]["predict_time"], float)
    assert_next_prediction_works(srv)


def test_cancel_blocking_sleep_after_it_returns(srv, started):
    out = {}

    def run():
        out["r"] = srv.post("/predictions", {"id": "sleeper", "input": {"mode": "sleep", "started": started}})

    t = threading.Thread(target=run)
    t.start()
    wait_file(started)
    assert srv.post("/predictions/sleeper/cancel").status_code == 200
    t.join(15 * SLOW)
    assert out["r"].json()["status"] == "canceled", out["r"].text
    assert_next_prediction_works(srv)


def test_cancel_via_trainings_route_shares_registry(srv, started):
    r = srv.post("/predictions", {"id": "shared-reg", "input": {"mode": "busy", "started": started}}, headers=ASYNC)
    assert r.status_code == 202
    wait_file(started)
    assert srv.post("/trainings/shared-reg/cancel").status_code == 200
    srv.wait_status("READY", timeout=10)
    assert srv.post("/trainings/shared-reg/cancel").status_code == 404
    assert_next_prediction_works(srv)


@pytest.mark.parametrize("attempt", range(5))
def test_cancel_right_after_put_is_not_lost(srv, make_receiver, attempt):
    """PUT (async) and cancel back to back, before the worker has started the prediction:
    the cancel must be applied (the predictor would otherwise run ~3 s and succeed)."""
    rx = make_receiver()
    pid = "early-%d-%s" % (attempt, uuid.uuid4().hex[:6])
    r = srv.put("/predictions/" + pid, {"input": {"mode": "steps"}, "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202, r.text
    c = srv.post("/predictions/%s/cancel" % pid)
    assert (c.status_code, c.text) == (200, "{}")
    done = rx.wait_terminal(pid, timeout=15)
    assert done["status"] == "canceled", done
    srv.wait_status("READY")


def test_cancel_pipelined_with_put_is_not_lost(srv, make_receiver):
    """The same race made tighter: PUT and cancel in one TCP write."""
    for i in range(3):
        rx = make_receiver()
        pid = "pipelined-%d-%s" % (i, uuid.uuid4().hex[:6])
        body = json.dumps({"input": {"mode": "steps"}, "webhook": rx.url})
        data = raw_request("PUT", "/predictions/" + pid, body,
                           {"Content-Type": "application/json", "Prefer": "respond-async"})
        data += raw_request("POST", "/predictions/%s/cancel" % pid)
        with RawConn(srv.port) as conn:
            conn.send(data)
            first = conn.read_response()
            second = conn.read_response()
        assert first.status == 202, first
        assert (second.status, second.body) == (200, b"{}"), second
        done = rx.wait_terminal(pid, timeout=15)
        assert done["status"] == "canceled", done
        srv.wait_status("READY")


def test_sync_client_disconnect_cancels(srv, started, make_receiver):
    rx = make_receiver()
    body = json.dumps({"id": "dropper", "input": {"mode": "busy", "started": started}, "webhook": rx.url})
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.sendall(raw_request("POST", "/predictions", body, {"Content-Type": "application/json"}))
    wait_file(started)
    assert srv.health()["status"] == "BUSY"
    sock.close()
    done = rx.wait_terminal("dropper", timeout=10)
    assert done["status"] == "canceled", done
    assert_next_prediction_works(srv)


@pytest.mark.parametrize("attempt", range(4))
def test_sync_client_disconnect_right_after_sending(srv, make_receiver, attempt):
    """Send the request and close at once: the prediction (if the server got to create it)
    must end canceled, never run its ~3 s to success."""
    rx = make_receiver()
    pid = "drop-now-%d" % attempt
    body = json.dumps({"id": pid, "input": {"mode": "steps"}, "webhook": rx.url})
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.sendall(raw_request("POST", "/predictions", body, {"Content-Type": "application/json"}))
    sock.close()
    time.sleep(0.3)
    srv.wait_status("READY", timeout=10)
    hits = rx.for_id(pid)
    if hits:  # it was created: then it was canceled
        done = rx.wait_terminal(pid)
        assert done["status"] == "canceled", done
    assert_next_prediction_works(srv)


def test_sync_client_disconnect_steps_predictor(srv, make_receiver, tmp_path):
    """Disconnect while a sleeping-in-steps prediction runs: canceled, not finished."""
    rx = make_receiver()
    body = json.dumps({"id": "dropper2", "input": {"mode": "steps", "steps": 1000}, "webhook": rx.url})
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.sendall(raw_request("POST", "/predictions", body, {"Content-Type": "application/json"}))
    rx.wait_count(1, "dropper2")  # the start webhook: it is running
    sock.close()
    done = rx.wait_terminal("dropper2", timeout=10)
    assert done["status"] == "canceled", done
    assert_next_prediction_works(srv)


def test_async_prediction_ignores_client_connection(srv, make_receiver):
    rx = make_receiver()
    body = json.dumps({"id": "async-stays", "input": {"mode": "steps", "steps": 30}, "webhook": rx.url})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(raw_request("POST", "/predictions", body,
                                 {"Content-Type": "application/json", "Prefer": "respond-async"}))
        sock.recv(4096)
    done = rx.wait_terminal("async-stays", timeout=10)
    assert done["status"] == "succeeded", done
    assert done["output"] == "finished"
    srv.wait_status("READY")
