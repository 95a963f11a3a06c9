"""Where the worker runs predictions (docs/architecture.md#processes): async ones as Tasks on the
event loop that reads the slot sockets itself, blocking parts of them (File/Path downloads, a
sync generator returned by an async method) on threads so that the loop keeps serving the other
slots; sync ones on the thread that ran setup(), with cancellation and logs as before. Real
server, real worker, real HTTP."""

import base64
import concurrent.futures
import os
import threading
import time

import pytest
import requests

from conftest import SLOW


def wait_path(path, timeout=15):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "%s never appeared" % path
        time.sleep(0.01)


def post(srv, inp, pred_id=None, timeout=60):
    body = {"input": inp}
    if pred_id:
        body["id"] = pred_id
    r = requests.post(srv.url + "/predictions", json=body, timeout=timeout * SLOW)
    assert r.status_code == 200, r.text
    return r.json()


ASYNC_BLOCKING = """
import asyncio
import os
import threading
import time

from typing import Any, Optional

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    async def setup(self):
        self.loop_thread = threading.get_ident()

    async def predict(self, mode: str = "quick", gate: str = "", started: str = "",
                      doc: Optional[Path] = None) -> Any:
        on_loop = threading.get_ident() == self.loop_thread
        if mode == "quick":
            print("quick on the loop")
            return {"on_loop": on_loop}
        if mode == "path":
            print("path input read")
            return {"on_loop": on_loop, "text": open(doc).read(), "is_path": isinstance(doc, Path)}
        if mode == "blocking_generator":
            def gen():
                open(started, "w").close()
                # blocks its thread until the test has seen a quick prediction finish
                deadline = time.time() + 30
                while not os.path.exists(gate) and time.time() < deadline:
                    time.sleep(0.01)
                yield "after the gate"
                yield "gen thread is loop: %s" % (threading.get_ident() == self.loop_thread)
            return gen()
        raise ValueError(mode)
"""


@pytest.fixture(scope="module")
def blocking(make_module_server):
    srv = make_module_server(code=ASYNC_BLOCKING, env={"COG_MAX_CONCURRENCY": "2"})
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


def test_async_prediction_runs_on_the_setup_loop(blocking):
    body = post(blocking, {"mode": "quick"})
    assert body["status"] == "succeeded", body
    assert body["output"] == {"on_loop": True}
    assert body["logs"] == "quick on the loop\n"


def test_async_path_input_prepared_off_the_loop(blocking):
    url = "data:text/plain;base64," + base64.b64encode(b"hello from a data URI").decode()
    body = post(blocking, {"mode": "path", "doc": url})
    assert body["status"] == "succeeded", body
    assert body["output"] == {"on_loop": True, "text": "hello from a data URI", "is_path": True}
    assert body["logs"] == "path input read\n"


def test_sync_generator_from_async_method_does_not_block_the_loop(blocking, tmp_path):
    gate, started = tmp_path / "gate", tmp_path / "started"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, blocking, {"mode": "blocking_generator", "gate": str(gate),
                                            "started": str(started)})
        wait_path(str(started))
        # the generator blocks its thread; the other slot still runs on the loop
        quick = post(blocking, {"mode": "quick"}, timeout=20)
        assert quick["status"] == "succeeded" and quick["output"] == {"on_loop": True}, quick
        assert not slow.done()
        gate.touch()
        body = slow.result(timeout=30 * SLOW)
    assert body["status"] == "succeeded", body
    assert body["output"] == ["after the gate", "gen thread is loop: False"]


ASYNC_STREAM = """
import asyncio
import datetime


class Predictor:
    def __init__(self):
        self.closed = 0

    async def predict(self, mode: str = "bad_item"):
        if mode == "closed":
            yield self.closed
            return
        try:
            yield "first"
            yield datetime.date(2024, 1, 1)   # not JSON: fails the prediction
            await asyncio.sleep(0)
            yield "never sent"
            await asyncio.sleep(30)
        finally:
            self.closed += 1
"""


def test_async_generator_bad_item_fails_and_stops_it(make_server):
    srv = make_server(code=ASYNC_STREAM)
    assert srv.health()["status"] == "READY", srv.log_text()
    started = time.time()
    body = post(srv, {"mode": "bad_item"})
    assert time.time() - started < 20 * SLOW  # not the 30 s sleep: it was cancelled
    assert body["status"] == "failed", body
    assert body["error"].startswith("Prediction failed: Failed to serialize output item: TypeError"), body
    assert body["error"].count("Prediction failed: ") == 1, body
    assert "output" not in body, body  # a failed prediction shows no output
    # the generator was cancelled: its finally ran before the next prediction
    again = post(srv, {"mode": "closed"})
    assert again["status"] == "succeeded" and again["output"] == [1], again


CANCEL_ASYNC_MANY = """
import asyncio
import os


class Predictor:
    async def predict(self, marker: str = "", sleep: float = 0) -> str:
        if marker:
            open(marker, "w").close()
        await asyncio.sleep(sleep)
        return "done"
"""


def test_cancel_one_async_prediction_among_several(make_server, tmp_path):
    srv = make_server(code=CANCEL_ASYNC_MANY, env={"COG_MAX_CONCURRENCY": "4"})
    assert srv.health()["status"] == "READY", srv.log_text()
    marker = tmp_path / "m"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        victim = pool.submit(post, srv, {"marker": str(marker), "sleep": 60}, "victim")
        others = [pool.submit(post, srv, {"sleep": 0.5}, "other-%d" % i) for i in range(3)]
        wait_path(str(marker))
        c = requests.post(srv.url + "/predictions/victim/cancel", timeout=10 * SLOW)
        assert c.status_code == 200, c.text
        assert victim.result(timeout=20 * SLOW)["status"] == "canceled"
        for f in others:
            b = f.result(timeout=20 * SLOW)
            assert b["status"] == "succeeded" and b["output"] == "done", b
    assert srv.wait_status("READY")["status"] == "READY"


SYNC_ON_SETUP_THREAD = """
import os
import threading
import time

LOCAL = threading.local()


class Predictor:
    def setup(self):
        self.setup_thread = threading.get_ident()
        LOCAL.pool = "made in setup"   # what a library keeps per thread (an OpenMP pool, ...)

    def predict(self, mode: str = "where", marker: str = "") -> object:
        if mode == "where":
            print("where am I")
            return {"setup_thread": threading.get_ident() == self.setup_thread,
                    "local": getattr(LOCAL, "pool", None)}
        if mode == "busy":
            print("busy started")
            open(marker, "w").close()
            while True:
                time.sleep(0.01)
        raise ValueError(mode)
"""


def test_sync_prediction_on_the_setup_thread_keeps_cancel_and_logs(make_server, tmp_path):
    srv = make_server(code=SYNC_ON_SETUP_THREAD)
    assert srv.health()["status"] == "READY", srv.log_text()
    body = post(srv, {"mode": "where"})
    assert body["status"] == "succeeded", body
    assert body["output"] == {"setup_thread": True, "local": "made in setup"}
    assert body["logs"] == "where am I\n"
    marker = tmp_path / "busy"
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", post(srv, {"mode": "busy", "marker": str(marker)},
                                                                    "sync-busy")))
    t.start()
    wait_path(str(marker))
    # the control channel has its own thread: health and cancel answer while predict() runs
    assert srv.health()["status"] == "BUSY"
    c = requests.post(srv.url + "/predictions/sync-busy/cancel", timeout=10 * SLOW)
    assert c.status_code == 200, c.text
    t.join(30 * SLOW)
    assert not t.is_alive()
    assert result["r"]["status"] == "canceled", result["r"]
    # and the next one runs on the same thread again
    again = post(srv, {"mode": "where"})
    assert again["output"] == {"setup_thread": True, "local": "made in setup"}, again
    # the worker stops cleanly (its control thread ends, then the main thread)
    assert srv.stop(timeout=20) == 0
