"""COG_PREDICT_TIMEOUT: a prediction that runs too long is cancelled in the worker and ends
`failed` with "Prediction timed out", keeping its outputs; its webhook hears it; the slot is
free for the next one. A predictor stuck in C code that never sees the cancel is given up on
after the grace period; the server keeps answering and the slot comes back once the worker
is done with it (docs/operations.md, "Prediction timeout")."""

import re
import threading
import time

import pytest

from conftest import SLOW
from receivers import Receiver

PREDICTOR = """
import time
from typing import Iterator


class Predictor:
    def predict(self, mode: str = "fast", seconds: float = 0.0) -> Iterator[str]:
        if mode == "fast":
            yield "done"
            return
        if mode == "stuck":
            time.sleep(seconds)  # in C: the cancel is seen only when it returns
            yield "woke"
            return
        yield "a"
        yield "b"
        while True:  # Python code: the cancel lands at once
            time.sleep(0.01)
"""

ASYNC_PREDICTOR = """
import asyncio


class Predictor:
    async def predict(self, seconds: float = 0.0) -> str:
        await asyncio.sleep(seconds)
        return "slept"
"""


@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server(code=PREDICTOR, env={"COG_PREDICT_TIMEOUT": "1", "COGLET_PREDICT_TIMEOUT_GRACE": "1"})
    assert s.health()["status"] == "READY", s.log_text()
    return s


def test_timed_out_prediction_fails_and_keeps_outputs(srv):
    r = srv.predict({"mode": "loop"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "failed", body
    assert body["error"] == "Prediction timed out"
    assert body["output"] == ["a", "b"]
    srv.wait_log("Prediction timed out after 1s; cancelling it")
    text = srv.get("/metrics").text
    assert re.search(r'^coglet_predictions_timed_out_total\{door="http"\} [1-9]', text, re.M), text


def test_next_prediction_runs_normally_after_a_timeout(srv):
    assert srv.predict({"mode": "loop"}).json()["status"] == "failed"
    r = srv.predict({"mode": "fast"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["output"] == ["done"]
    assert srv.health()["status"] == "READY"


def test_timeout_reaches_the_terminal_webhook(srv):
    rx = Receiver()
    try:
        r = srv.post("/predictions", {"input": {"mode": "loop"}, "webhook": rx.url},
                     headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        final = rx.wait_terminal(r.json()["id"], timeout=20)
        assert final["status"] == "failed"
        assert final["error"] == "Prediction timed out"
        assert final["output"] == ["a", "b"]
    finally:
        rx.close()


def test_timed_out_async_prediction(make_server):
    s = make_server(code=ASYNC_PREDICTOR, env={"COG_PREDICT_TIMEOUT": "0.5"})
    body = s.predict({"seconds": 60}).json()
    assert body["status"] == "failed"
    assert body["error"] == "Prediction timed out"
    assert s.predict({"seconds": 0}).json()["status"] == "succeeded"


def test_stuck_predictor_is_given_up_on_and_its_slot_comes_back(srv):
    out = {}

    def run():
        out["r"] = srv.predict({"mode": "stuck", "seconds": 4 * SLOW})

    t = threading.Thread(target=run)
    t.start()
    # the loop never blocks on the stuck worker: the server keeps answering meanwhile
    srv.wait_log("Prediction timed out after 1s")
    assert srv.get("/health-check").status_code == 200
    t.join(30 * SLOW)
    body = out["r"].json()
    assert body["status"] == "failed" and body["error"] == "Prediction timed out", body
    srv.wait_log("did not stop the prediction within")
    # given up on while the worker still sleeps: its only slot is out of service
    assert srv.health()["status"] == "BUSY"
    assert srv.predict({"mode": "fast"}).status_code == 409
    # once the sleep returns, the worker reports the run over and the slot is back
    srv.wait_log("slot 0 is free again", timeout=30)
    srv.wait_status("READY")
    r = srv.predict({"mode": "fast"})
    assert r.json()["status"] == "succeeded", r.text


def test_invalid_timeout_is_ignored(make_server):
    s = make_server(code=PREDICTOR, env={"COG_PREDICT_TIMEOUT": "soon"})
    s.wait_log("Invalid COG_PREDICT_TIMEOUT value soon")
    assert s.predict({"mode": "fast"}).json()["status"] == "succeeded"
