"""Runtime fidelity, execution (docs/predictors.md, docs/worker-protocol.md#running-a-prediction): every predictor form (sync and
async run()/predict() on BaseRunner, BasePredictor, plain classes, functions), async setup and
predictions sharing one event loop, setup(weights), live streaming of sync and async
generators (proved by ordering: the predictor waits for a file the test only creates after it
has seen the previous item), output encoding, 8 concurrent async predictions in one worker
with their own logs/metrics/context, cancellation of sync and async code, error strings and
the user healthcheck. Real server, real worker, real cog SDK, real HTTP."""

import concurrent.futures
import json
import os
import pathlib
import threading
import time

import pytest
import requests

from conftest import EXAMPLES, SLOW
from receivers import make_receiver  # noqa: F401 (fixture)


def ok(srv, inp=None, **kw):
    r = srv.predict(inp or {}, **kw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded", body
    return body


def failed(srv, inp=None):
    r = srv.predict(inp or {})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "failed", body
    return body


def wait_path(path, timeout=15):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "%s never appeared" % path
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------
# predictor forms
# ---------------------------------------------------------------------------------------

FORMS = """
import asyncio
import os
import threading

from cog import BasePredictor, BaseRunner, Input


def where():
    try:
        asyncio.get_running_loop()
        return "loop"
    except RuntimeError:
        return "thread"


class SyncRunner(BaseRunner):
    def setup(self, weights=None):
        self.weights = weights
        self.setup_thread = threading.get_ident()

    def run(self, text: str = Input(default="x")) -> dict:
        return {"form": "SyncRunner", "text": text, "where": where(), "weights": self.weights,
                "setup_thread": threading.get_ident() == self.setup_thread}


class AsyncRunner(BaseRunner):
    async def setup(self):
        self.loop = asyncio.get_running_loop()

    async def run(self, text: str = Input(default="x")) -> dict:
        await asyncio.sleep(0)
        return {"form": "AsyncRunner", "text": text, "where": where(),
                "same_loop": asyncio.get_running_loop() is self.loop}


class SyncPredictor(BasePredictor):
    def predict(self, text: str = Input(default="x")) -> dict:
        return {"form": "SyncPredictor", "text": text, "where": where()}


class AsyncPredictor(BasePredictor):
    async def predict(self, text: str = Input(default="x")) -> dict:
        await asyncio.sleep(0.01)
        return {"form": "AsyncPredictor", "text": text, "where": where()}


class PlainAsync:
    async def run(self, text: str = "x"):
        await asyncio.sleep(0)
        return {"form": "PlainAsync", "text": text, "where": where()}


class PlainSync:
    def predict(self, text: str = "x"):
        return {"form": "PlainSync", "text": text, "where": where()}


def sync_fn(text: str = "x") -> dict:
    return {"form": "sync_fn", "text": text, "where": where()}


async def async_fn(text: str = "x") -> dict:
    await asyncio.sleep(0)
    return {"form": "async_fn", "text": text, "where": where()}
"""

FORM_NAMES = ["SyncRunner", "AsyncRunner", "SyncPredictor", "AsyncPredictor", "PlainAsync", "PlainSync",
              "sync_fn", "async_fn"]
ASYNC_FORMS = {"AsyncRunner", "AsyncPredictor", "PlainAsync", "async_fn"}


@pytest.fixture(scope="module")
def forms(make_module_server):
    """One server per form, started together (each waits for its own READY)."""
    servers = {}
    for name in FORM_NAMES:
        servers[name] = make_module_server(files={"forms.py": FORMS}, ref="forms.py:" + name,
                                           env={"COG_WEIGHTS": "/weights/for/" + name}, ready=False)
    for name, srv in servers.items():
        h = srv.wait_status("READY", "SETUP_FAILED")
        assert h["status"] == "READY", (name, h, srv.log_text())
    return servers


@pytest.mark.parametrize("name", FORM_NAMES)
def test_predictor_form(forms, name):
    srv = forms[name]
    out = ok(srv, {"text": "hi " + name})["output"]
    assert out["form"] == name
    assert out["text"] == "hi " + name
    # async code runs on the event loop; sync code on a plain thread
    assert out["where"] == ("loop" if name in ASYNC_FORMS else "thread"), out
    # Input(default=...) is unwrapped for every form
    assert ok(srv)["output"]["text"] == "x"
    if name == "AsyncRunner":
        assert out["same_loop"] is True
    if name == "SyncRunner":
        # setup(weights) got COG_WEIGHTS; sync predictions run on the thread that ran setup()
        # (where a library's thread pool, PyTorch's OpenMP one, was made: docs/architecture.md)
        assert out["weights"] == "/weights/for/SyncRunner"
        assert out["setup_thread"] is True


ASYNC_SETUP = """
import asyncio
import os

from cog import BasePredictor


class Predictor(BasePredictor):
    async def setup(self, weights=None):
        self.weights = weights
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()
        self.queue = asyncio.Queue()
        self.ticks = 0
        self.consumer = asyncio.create_task(self.consume())
        self.ticker = asyncio.create_task(self.tick())
        await asyncio.sleep(0)  # the consumer is now waiting on the queue: bound to this loop

    async def tick(self):
        while True:
            self.ticks += 1
            await asyncio.sleep(0.005)

    async def consume(self):
        while True:
            item, fut = await self.queue.get()
            fut.set_result(item * 2)

    async def predict(self, n: int = 1) -> dict:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        async with self.lock:
            await self.queue.put((n, fut))     # bound to the setup loop: another loop would raise
            doubled = await asyncio.wait_for(fut, 10)
        before = self.ticks
        await asyncio.sleep(0.05)
        return {"same_loop": loop is self.loop, "doubled": doubled, "weights": self.weights,
                "ticker_runs": self.ticks > before, "consumer_alive": not self.consumer.done()}
"""


def test_async_setup_and_predictions_share_one_loop(make_server):
    srv = make_server(code=ASYNC_SETUP, env={"COG_WEIGHTS": "https://weights.example/model.tar"})
    assert srv.health()["status"] == "READY", srv.log_text()
    for n in (1, 21):
        out = ok(srv, {"n": n})["output"]
        assert out == {"same_loop": True, "doubled": 2 * n, "weights": "https://weights.example/model.tar",
                       "ticker_runs": True, "consumer_alive": True}


def test_setup_weights_none_without_cog_weights(make_server):
    srv = make_server(code="""
        from cog import BasePredictor

        class Predictor(BasePredictor):
            def setup(self, weights=None):
                self.w = ("unset", weights)

            def predict(self) -> list:
                return list(self.w)
        """, env={"COG_WEIGHTS": None})
    assert ok(srv)["output"] == ["unset", None]


# ---------------------------------------------------------------------------------------
# generators stream live
# ---------------------------------------------------------------------------------------

GATED = """
import asyncio
import os
import time


def gate(gate_dir, i):
    path = os.path.join(gate_dir, "go-%d" % i)
    deadline = time.time() + 20
    while not os.path.exists(path):
        if time.time() > deadline:
            raise RuntimeError("item %d was never seen by the client" % i)
        time.sleep(0.01)


class Predictor:
    def predict(self, n: int = 3, gate_dir: str = "", fail_at: int = -1):
        for i in range(n):
            if i == fail_at:
                raise ValueError("gen boom at %d" % i)
            print("yield %d" % i)
            yield "item %d" % i
            if gate_dir:
                gate(gate_dir, i)
"""

AGEN = GATED.replace("class Predictor:", "class Unused:") + """

class Predictor:
    async def predict(self, n: int = 3, gate_dir: str = "", fail_at: int = -1):
        for i in range(n):
            if i == fail_at:
                raise ValueError("agen boom at %d" % i)
            print("yield %d" % i)
            yield {"i": i, "text": "item %d" % i}
            if gate_dir:
                path = os.path.join(gate_dir, "go-%d" % i)
                for _ in range(2000):
                    if os.path.exists(path):
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise RuntimeError("item %d was never seen by the client" % i)
"""

STREAM_SCHEMA = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "paths": {"/predictions": {"post": {"summary": "Predict", "x-cog-streaming": True}}},
    "components": {"schemas": {
        "Input": {"title": "Input", "type": "object", "properties": {
            "n": {"title": "N", "type": "integer", "default": 3},
            "gate_dir": {"title": "Gate Dir", "type": "string", "default": ""},
            "fail_at": {"title": "Fail At", "type": "integer", "default": -1},
        }},
        "Output": {"title": "Output", "type": "array", "items": {}, "x-cog-array-type": "iterator"},
    }},
}


def sse_events(resp):
    """(name, data) of each SSE event, yielded as the bytes arrive."""
    buf = b""
    for chunk in resp.iter_content(chunk_size=None):
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            name, data = None, []
            for line in block.decode("utf-8").split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
            if name is not None or data:
                yield name, json.loads("\n".join(data))


@pytest.fixture(scope="module")
def gen_server(make_module_server):
    srv = make_module_server(code=GATED, files={".cog/openapi_schema.json": STREAM_SCHEMA})
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


@pytest.fixture(scope="module")
def agen_server(make_module_server):
    srv = make_module_server(code=AGEN, files={".cog/openapi_schema.json": STREAM_SCHEMA})
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


def test_sync_generator_output_webhooks_arrive_live(gen_server, make_receiver, tmp_path):
    rx = make_receiver()
    gates = tmp_path / "gates-webhook"
    gates.mkdir()
    r = gen_server.post("/predictions",
                        {"id": "gen-live-wh", "input": {"n": 3, "gate_dir": str(gates)}, "webhook": rx.url},
                        headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    for i in range(3):
        # item i must reach us while the predictor is still blocked waiting for go-i
        hits = rx.wait_for(lambda hs: any(h.body.get("output") and len(h.body["output"]) > i
                                          and h.body.get("status") == "processing" for h in hs),
                           timeout=15, what="an output webhook with %d item(s)" % (i + 1))
        assert not (gates / ("go-%d" % i)).exists()
        outs = [h.body["output"] for h in hits if h.body.get("output") and len(h.body["output"]) > i]
        assert outs[0][: i + 1] == ["item %d" % k for k in range(i + 1)]
        (gates / ("go-%d" % i)).touch()
    final = rx.wait_terminal("gen-live-wh", timeout=15)
    assert final["status"] == "succeeded", final
    assert final["output"] == ["item 0", "item 1", "item 2"]
    assert final["logs"] == "yield 0\nyield 1\nyield 2\n"


def _sse_gated(srv, gates, pred_id, n=3):
    resp = srv.session.post(srv.url + "/predictions", json={"id": pred_id, "input": {"n": n, "gate_dir": str(gates)}},
                            headers={"Accept": "text/event-stream"}, stream=True, timeout=60 * SLOW)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = []
    seen = 0
    for name, data in sse_events(resp):
        events.append((name, data))
        if name == "output":
            assert not (gates / ("go-%d" % seen)).exists()
            assert data["index"] == seen, events
            (gates / ("go-%d" % seen)).touch()
            seen += 1
        if name == "completed":
            break
    resp.close()
    return events


def test_sync_generator_sse_chunks_arrive_live(gen_server, tmp_path):
    gates = tmp_path / "gates-sse"
    gates.mkdir()
    events = _sse_gated(gen_server, gates, "gen-live-sse")
    outputs = [d["chunk"] for n, d in events if n == "output"]
    assert outputs == ["item 0", "item 1", "item 2"]
    assert events[0] == ("start", {"id": "gen-live-sse", "status": "processing"})
    assert events[-1][0] == "completed"
    assert events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["output"] == outputs


def test_async_generator_sse_chunks_arrive_live(agen_server, tmp_path):
    """Our improvement over the Rust coglet, which collects async generators first."""
    gates = tmp_path / "gates-agen"
    gates.mkdir()
    events = _sse_gated(agen_server, gates, "agen-live-sse")
    outputs = [d["chunk"] for n, d in events if n == "output"]
    assert outputs == [{"i": i, "text": "item %d" % i} for i in range(3)]
    # logs interleave with outputs in production order
    order = [(n, d.get("data", d.get("chunk"))) for n, d in events if n in ("output", "log")]
    assert order == [("log", "yield 0\n"), ("output", outputs[0]), ("log", "yield 1\n"),
                     ("output", outputs[1]), ("log", "yield 2\n"), ("output", outputs[2])], order
    assert events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["output"] == outputs


def test_async_generator_output_webhooks_arrive_live(agen_server, make_receiver, tmp_path):
    rx = make_receiver()
    gates = tmp_path / "gates-agen-wh"
    gates.mkdir()
    r = agen_server.post("/predictions", {"id": "agen-live-wh", "input": {"n": 2, "gate_dir": str(gates)},
                                          "webhook": rx.url, "webhook_events_filter": ["output", "completed"]},
                         headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    for i in range(2):
        rx.wait_for(lambda hs: any(h.body.get("output") and len(h.body["output"]) > i for h in hs),
                    timeout=15, what="output webhook %d" % i)
        (gates / ("go-%d" % i)).touch()
    final = rx.wait_terminal("agen-live-wh", timeout=15)
    assert final["status"] == "succeeded", final
    assert final["output"] == [{"i": 0, "text": "item 0"}, {"i": 1, "text": "item 1"}]


def test_generator_error_one_prefix(gen_server):
    body = failed(gen_server, {"n": 3, "fail_at": 2})
    assert body["error"] == "Prediction failed: Generator iteration error: ValueError: gen boom at 2"
    assert body["logs"] == ""
    assert "output" not in body


def test_async_generator_error(agen_server):
    body = failed(agen_server, {"n": 3, "fail_at": 1})
    assert body["error"] == "Prediction failed: Async prediction failed: ValueError: agen boom at 1", body
    assert ok(agen_server, {"n": 1})["output"] == [{"i": 0, "text": "item 0"}]


def test_empty_generators(gen_server, agen_server):
    assert ok(gen_server, {"n": 0})["output"] == []
    assert ok(agen_server, {"n": 0})["output"] == []


# ---------------------------------------------------------------------------------------
# output encoding
# ---------------------------------------------------------------------------------------

SHAPES = """
import asyncio
import dataclasses
import datetime
import enum
from typing import Any

import cog


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Box:
    width: int
    label: str
    tags: list


class Result(cog.BaseModel):
    score: float
    color: Color
    when: datetime.datetime


WHEN = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)


class Predictor:
    async def predict(self, mode: str = "dict") -> Any:
        if mode == "dict":
            return {"zeta": {"b": 2, "a": 1}, "Alpha": [3, {"y": 1, "x": 2}], "mid": None}
        if mode == "dataclass":
            return Box(width=3, label="crate", tags=["a", "b"])
        if mode == "cog_basemodel":
            return Result(score=0.5, color=Color.BLUE, when=WHEN)
        if mode == "enum":
            return Color.RED
        if mode == "intenum":
            return Level.HIGH
        if mode == "datetime":
            return WHEN
        if mode == "nested":
            return {"boxes": [Box(1, "x", [Color.RED]), Box(2, "y", [])], "at": WHEN, "set": {7}}
        if mode == "list_of_models":
            return [Result(score=1.0, color=Color.RED, when=WHEN), Box(0, "z", [])]
        if mode == "pydantic":
            import pydantic

            class P(pydantic.BaseModel):
                b: int
                a: str

            return P(b=1, a="x")
        if mode == "generator_from_async":
            return (i * i for i in range(4))
        if mode == "single":
            return "just one"
        if mode == "single_list":
            return ["just one"]
        if mode == "none":
            return None
        if mode == "date":
            return datetime.date(2024, 1, 1)
        if mode == "nan":
            return float("nan")
        raise ValueError(mode)
"""


@pytest.fixture(scope="module")
def shapes(make_module_server):
    srv = make_module_server(code=SHAPES)
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


@pytest.mark.parametrize("mode,expected", [
    ("dataclass", {"width": 3, "label": "crate", "tags": ["a", "b"]}),
    ("cog_basemodel", {"score": 0.5, "color": "blue", "when": "2024-05-06T07:08:09.123456+00:00"}),
    ("enum", "red"),
    ("intenum", 3),
    ("datetime", "2024-05-06T07:08:09.123456+00:00"),
    ("nested", {"boxes": [{"width": 1, "label": "x", "tags": ["red"]}, {"width": 2, "label": "y", "tags": []}],
                "at": "2024-05-06T07:08:09.123456+00:00", "set": [7]}),
    ("list_of_models", [{"score": 1.0, "color": "red", "when": "2024-05-06T07:08:09.123456+00:00"},
                        {"width": 0, "label": "z", "tags": []}]),
    ("generator_from_async", [0, 1, 4, 9]),
    ("single", "just one"),
    ("single_list", ["just one"]),
    ("none", None),
])
def test_output_encoding(shapes, mode, expected):
    body = ok(shapes, {"mode": mode})
    assert "output" in body
    assert body["output"] == expected
    assert type(body["output"]) is type(expected)


def test_dict_output_keys_sorted_at_every_level(shapes):
    r = shapes.predict({"mode": "dict"})
    assert '"output":{"Alpha":[3,{"x":2,"y":1}],"mid":null,"zeta":{"a":1,"b":2}}' in r.text, r.text
    r = shapes.predict({"mode": "dataclass"})
    assert '"output":{"label":"crate","tags":["a","b"],"width":3}' in r.text, r.text


def test_pydantic_output(shapes):
    pytest.importorskip("pydantic")
    assert ok(shapes, {"mode": "pydantic"})["output"] == {"a": "x", "b": 1}


@pytest.mark.parametrize("mode,needle", [("date", "TypeError"), ("nan", "ValueError")])
def test_unserializable_output_fails(shapes, mode, needle):
    body = failed(shapes, {"mode": mode})
    assert body["error"].startswith("Prediction failed: Failed to serialize output: " + needle), body
    assert body["error"].count("Prediction failed: ") == 1


# ---------------------------------------------------------------------------------------
# concurrency: 8 async predictions at once in one worker
# ---------------------------------------------------------------------------------------

CONCURRENT = """
import asyncio
import os
import sys

from coglet import _sdk


class Predictor:
    async def setup(self):
        self.barrier = asyncio.Barrier(8)

    async def predict(self, tag: str = "", wait: bool = True) -> dict:
        scope = _sdk.current_scope()

        async def helper(k):
            print("%s task %d" % (tag, k))
            _sdk.current_scope().record_metric("tasks", 1, mode="incr")
            await asyncio.sleep(0)

        print("%s start" % tag)
        if wait:
            # every one of the 8 must be inside predict at the same time to get past this
            await asyncio.wait_for(self.barrier.wait(), 20)
        for i in range(5):
            print("%s line %d" % (tag, i))
            sys.stderr.write("%s err %d\\n" % (tag, i))
            scope.record_metric("steps", 1, mode="incr")
            await asyncio.sleep(0)
        await asyncio.gather(*(helper(k) for k in range(3)))
        scope.record_metric("tag", tag)
        scope.record_metric("seen", tag, mode="append")
        return {"tag": tag, "pid": os.getpid(), "context": dict(_sdk.current_scope().context)}
"""


def test_eight_concurrent_async_predictions_in_one_worker(make_server):
    srv = make_server(code=CONCURRENT, env={"COG_MAX_CONCURRENCY": "8"})
    assert srv.health()["status"] == "READY", srv.log_text()
    assert len(srv.worker_pids()) == 1
    tags = ["p%d" % i for i in range(8)]

    def one(tag):
        r = requests.post(srv.url + "/predictions", json={"id": "conc-" + tag, "input": {"tag": tag},
                                                         "context": {"who": tag, "shared": "yes"}},
                          timeout=60 * SLOW)
        return r.status_code, r.json()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, tags))
    pids = set()
    for tag, (code, body) in zip(tags, results):
        assert code == 200, body
        assert body["status"] == "succeeded", body
        assert body["id"] == "conc-" + tag
        out = body["output"]
        assert out["tag"] == tag
        assert out["context"] == {"who": tag, "shared": "yes"}
        pids.add(out["pid"])
        # its own lines, all of them, and nobody else's
        lines = body["logs"].splitlines()
        expected = {"%s start" % tag} | {"%s line %d" % (tag, i) for i in range(5)} \
            | {"%s err %d" % (tag, i) for i in range(5)} | {"%s task %d" % (tag, k) for k in range(3)}
        assert set(lines) == expected, body["logs"]
        assert len(lines) == len(expected), body["logs"]
        m = body["metrics"]
        assert {k: v for k, v in m.items() if k != "predict_time"} == {
            "steps": 5, "tasks": 3, "tag": tag, "seen": [tag]}, m
    assert len(pids) == 1
    assert pids == set(srv.worker_pids())
    # the slots all came back
    assert srv.wait_status("READY")["status"] == "READY"


def test_sync_predictor_with_concurrency_fails_setup(make_server):
    srv = make_server(code="""
        class Predictor:
            def predict(self) -> str:
                return "never"
        """, env={"COG_MAX_CONCURRENCY": "4"})
    h = srv.health()
    assert h["status"] == "SETUP_FAILED", h
    assert h["setup"]["status"] == "failed"
    assert "COG_MAX_CONCURRENCY > 1 requires an async run() or predict() method" in h["setup"]["logs"], h
    r = srv.predict({})
    assert r.status_code == 503


# ---------------------------------------------------------------------------------------
# cancellation and failures
# ---------------------------------------------------------------------------------------

SYNC_WORK = """
import os
import time

from coglet import CancelationException


class Predictor:
    def predict(self, mode: str = "ok", marker: str = "", text: str = "") -> str:
        if mode == "busy":
            open(marker, "w").close()
            n = 0
            while True:   # pure Python: interrupted at a bytecode boundary
                n += 1
        if mode == "swallow":
            open(marker, "w").close()
            try:
                while True:
                    pass
            except Exception:
                return "caught as Exception"   # CancelationException is a BaseException
        if mode == "raise":
            print("about to fail")
            raise ValueError("boom")
        if mode == "raise_empty":
            raise KeyError()
        return "ok " + text
"""

ASYNC_WORK = """
import asyncio
import os


class Predictor:
    def __init__(self):
        self.cleanups = 0

    async def predict(self, mode: str = "ok", marker: str = "", text: str = "") -> str:
        if mode == "sleep":
            open(marker, "w").close()
            try:
                await asyncio.sleep(60)
            finally:
                self.cleanups += 1
        if mode == "raise":
            raise ValueError("boom")
        if mode == "cleanups":
            return str(self.cleanups)
        return "ok " + text
"""


@pytest.fixture(scope="module")
def sync_work(make_module_server):
    srv = make_module_server(code=SYNC_WORK)
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


@pytest.fixture(scope="module")
def async_work(make_module_server):
    srv = make_module_server(code=ASYNC_WORK)
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


def _cancel_running(srv, pred_id, inp, marker):
    """A sync request in a thread; cancel once the predictor is running; its response."""
    result = {}

    def call():
        result["r"] = srv.post("/predictions", {"id": pred_id, "input": inp})

    t = threading.Thread(target=call)
    t.start()
    wait_path(marker)
    assert srv.health()["status"] == "BUSY"
    started = time.time()
    c = srv.post("/predictions/%s/cancel" % pred_id)
    assert c.status_code == 200 and c.json() == {}, c.text
    t.join(30 * SLOW)
    assert not t.is_alive(), "the canceled prediction never answered"
    return result["r"], time.time() - started


def test_cancel_sync_busy_loop(sync_work, tmp_path):
    marker = tmp_path / "busy-started"
    r, _ = _cancel_running(sync_work, "cancel-busy", {"mode": "busy", "marker": str(marker)}, str(marker))
    body = r.json()
    assert body["status"] == "canceled", body
    assert body["id"] == "cancel-busy"
    assert "error" not in body and "output" not in body
    # the slot is free at once: the next prediction runs normally (no 409)
    assert ok(sync_work, {"text": "after cancel"})["output"] == "ok after cancel"
    assert sync_work.post("/predictions/cancel-busy/cancel").status_code == 404


def test_cancel_sync_cannot_be_swallowed_by_except_exception(sync_work, tmp_path):
    marker = tmp_path / "swallow-started"
    r, _ = _cancel_running(sync_work, "cancel-swallow", {"mode": "swallow", "marker": str(marker)}, str(marker))
    assert r.json()["status"] == "canceled", r.json()
    assert ok(sync_work, {"text": "again"})["output"] == "ok again"


def test_cancel_async_sleep(async_work, tmp_path):
    marker = tmp_path / "sleep-started"
    r, took = _cancel_running(async_work, "cancel-sleep", {"mode": "sleep", "marker": str(marker)}, str(marker))
    body = r.json()
    assert body["status"] == "canceled", body
    assert took < 30  # not the 60 s sleep
    # the task really got CancelledError (its finally ran), and the slot is free
    assert ok(async_work, {"mode": "cleanups"})["output"] == "1"
    assert ok(async_work, {"text": "next"})["output"] == "ok next"


def test_sync_failure_error_has_one_prefix(sync_work):
    body = failed(sync_work, {"mode": "raise"})
    assert body["error"] == "Prediction failed: ValueError: boom"
    assert body["logs"] == ""
    assert isinstance(body["metrics"]["predict_time"], float)
    body = failed(sync_work, {"mode": "raise_empty"})
    assert body["error"] == "Prediction failed: KeyError: "
    assert ok(sync_work, {"text": "fine"})["output"] == "ok fine"


def test_async_failure_error(async_work):
    body = failed(async_work, {"mode": "raise"})
    assert body["error"] == "Prediction failed: Async prediction failed: ValueError: boom"
    assert ok(async_work, {"text": "fine"})["output"] == "ok fine"


# ---------------------------------------------------------------------------------------
# user healthcheck
# ---------------------------------------------------------------------------------------

HEALTH = """
import asyncio
import time


def mode():
    with open("hc_mode") as f:
        return f.read().strip()


class Predictor:
    def predict(self) -> str:
        return "ok"

    %(kw)sdef healthcheck(self):
        m = mode()
        if m == "false":
            return False
        if m == "raise":
            raise RuntimeError("Critical system error")
        if m == "sleep":
            %(sleep)s
        if m == "none":
            return None
        return True
"""
SYNC_HEALTH = HEALTH % {"kw": "", "sleep": "time.sleep(10)"}
ASYNC_HEALTH = HEALTH % {"kw": "async ", "sleep": "await asyncio.sleep(10)"}

HC_FALSE = "Healthcheck failed: user-defined healthcheck returned False"
HC_RAISE = "Healthcheck failed: RuntimeError: Critical system error"
HC_TIMEOUT = "Healthcheck failed: user-defined healthcheck timed out after 5.0 seconds"


@pytest.fixture(scope="module")
def hc_servers(make_module_server):
    out = {}
    for kind, code in (("sync", SYNC_HEALTH), ("async", ASYNC_HEALTH)):
        out[kind] = make_module_server(code=code, files={"hc_mode": "ok"}, ready=False)
    for srv in out.values():
        assert srv.wait_status("READY", "UNHEALTHY", "SETUP_FAILED")["status"] == "READY", srv.log_text()
    return out


def set_mode(srv, m):
    pathlib.Path(srv.cwd, "hc_mode").write_text(m)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_healthcheck_unhealthy_and_recovery(hc_servers, kind):
    srv = hc_servers[kind]
    set_mode(srv, "ok")
    h = srv.health()
    assert h["status"] == "READY" and "user_healthcheck_error" not in h, h
    set_mode(srv, "false")
    h = srv.health()
    assert h["status"] == "UNHEALTHY", h
    assert h["user_healthcheck_error"] == HC_FALSE
    assert ok(srv)["output"] == "ok"  # predictions are still served while unhealthy
    set_mode(srv, "raise")
    h = srv.health()
    assert h["status"] == "UNHEALTHY", h
    assert h["user_healthcheck_error"] == HC_RAISE
    set_mode(srv, "none")  # only a returned False is unhealthy
    h = srv.health()
    assert h["status"] == "READY" and "user_healthcheck_error" not in h, h
    # a prediction still works afterwards
    assert ok(srv)["output"] == "ok"


def test_healthcheck_timeout_then_recovery(hc_servers):
    """Both kinds at once: each health request takes the 5 s healthcheck timeout."""
    for srv in hc_servers.values():
        set_mode(srv, "sleep")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futs = {kind: pool.submit(srv.health) for kind, srv in hc_servers.items()}
        results = {kind: f.result() for kind, f in futs.items()}
    for kind, h in results.items():
        assert h["status"] == "UNHEALTHY", (kind, h)
        assert h["user_healthcheck_error"] == HC_TIMEOUT, (kind, h)
    for kind, srv in hc_servers.items():
        set_mode(srv, "ok")
        h = srv.health()
        assert h["status"] == "READY" and "user_healthcheck_error" not in h, (kind, h)


# ---------------------------------------------------------------------------------------
# the examples
# ---------------------------------------------------------------------------------------


def example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return f.read()


def test_example_streaming(make_server, make_receiver):
    srv = make_server(code=example("streaming.py"))
    assert srv.health()["status"] == "READY", srv.log_text()
    body = ok(srv, {"prompt": "the quick brown fox"})
    assert body["output"] == ["the", "quick", "brown", "fox"]
    assert body["logs"] == "streaming 4 words\n"
    assert ok(srv)["output"] == ["hello", "streaming", "world"]
    # with a delay, the first word's webhook comes before the prediction ends
    rx = make_receiver()
    r = srv.post("/predictions", {"id": "ex-stream", "input": {"prompt": "one two", "delay": 0.5},
                                  "webhook": rx.url}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    hits = rx.wait_for(lambda hs: any(h.body.get("output") == ["one"] for h in hs), timeout=10,
                       what="first word")
    first = [h for h in hits if h.body.get("output") == ["one"]][0]
    assert rx.wait_terminal("ex-stream", timeout=10)["output"] == ["one", "two"]
    last = rx.terminal("ex-stream")[0]
    # the first word was delivered before the prediction finished (it sleeps 2 x 0.5 s after it)
    assert first.time < last.time and first.body["status"] == "processing"


def test_example_async_concurrent(make_server):
    srv = make_server(code=example("async_concurrent.py"), env={"COG_MAX_CONCURRENCY": "4"})
    assert srv.health()["status"] == "READY", srv.log_text()

    def one(i):
        return requests.post(srv.url + "/predictions", json={"input": {"text": "w%d" % i, "delay": 0.3},
                                                             "context": {"user": "u%d" % i}},
                             timeout=30 * SLOW).json()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(one, range(4)))
    for i, body in enumerate(bodies):
        assert body["status"] == "succeeded", body
        assert body["output"] == "W%d" % i
        assert body["logs"] == "w%d: queued for u%d\nw%d: done\n" % (i, i, i)
        assert body["metrics"]["characters"] == 2
