"""Pull mode, the protocol (docs/queue.md): real coglet consumers against a real redis-server
of the test's own, with real webhook receivers and upload targets."""

import json
import os
import re
import signal
import time

import pytest
import requests

from conftest import PORT_RE, SLOW
from queue_helpers import CLAIMING_RE, make_consumer, redis_srv  # noqa: F401 (fixtures)
from receivers import Receiver, make_receiver, refusing_url  # noqa: F401

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

ECHO = """
from cog import BasePredictor, Input
class Predictor(BasePredictor):
    def predict(self, text: str = "x", n: int = 1) -> str:
        print("hello", text)
        return "hi " + text * n
"""

STREAMING = """
from typing import Iterator
from cog import BasePredictor
class Predictor(BasePredictor):
    def predict(self, n: int = 3) -> Iterator[str]:
        for i in range(n):
            print("line", i)
            yield "item%d" % i
"""

# Blocks until the file named by the input exists (or for `sleep` seconds); prints RAN to a
# runs file so a test can count the runs.
GATED = """
import os, time
from cog import BasePredictor
class Predictor(BasePredictor):
    def predict(self, gate: str = "", runs: str = "", sleep: float = 0.0) -> str:
        if runs:
            with open(runs, "a") as f:
                f.write("run\\n")
        deadline = time.time() + 60
        while gate and not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.01)
        if sleep:
            time.sleep(sleep)
        return "done"
"""


def wait_until(pred, timeout=10, what="condition"):
    deadline = time.time() + timeout * SLOW
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def bodies(rx, pred_id):
    return [h.body for h in rx.for_id(pred_id)]


# ---- starting ----


def test_creates_the_group_and_serves_no_http_without_port(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    c = make_consumer(redis_srv, "q", "c1", code=ECHO)
    assert redis_srv.client.xinfo_groups("q")[0]["name"] == "q"
    assert not PORT_RE.search(c.log_text())
    redis_srv.add("q", {"id": "p1", "input": {"text": "a"}, "webhook": rx.url})
    assert rx.wait_terminal("p1")["output"] == "hi a"


def test_an_existing_group_is_used(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    redis_srv.create_group("q")
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
    assert rx.wait_terminal("p1")["status"] == "succeeded"
    assert [g["consumers"] for g in redis_srv.client.xinfo_groups("q")] == [1]


def test_nothing_is_claimed_before_setup_succeeds(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    gate = tmp_path / "setup-gate"
    code = (
        """
import os, time
from cog import BasePredictor
class Predictor(BasePredictor):
    def setup(self):
        while not os.path.exists(%r):
            time.sleep(0.01)
    def predict(self) -> str:
        return "ok"
"""
        % str(gate)
    )
    redis_srv.create_group("q")
    c = make_consumer(redis_srv, "q", "c1", code=code, wait=r"created consumer group|redis reader connection")
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
    time.sleep(0.5)
    assert redis_srv.pending("q") == 0 and rx.snapshot() == []
    gate.write_text("")
    c.wait_log(CLAIMING_RE)
    assert rx.wait_terminal("p1")["output"] == "ok"


def test_http_api_beside_the_queue_with_port(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    c = make_consumer(redis_srv, "q", "c1", code=ECHO, args=("--port", "0", "--host", "127.0.0.1"))
    port = int(PORT_RE.search(c.wait_log(PORT_RE.pattern)).group(1))
    url = "http://127.0.0.1:%d" % port
    assert requests.get(url + "/health-check", timeout=10).json()["status"] == "READY"
    assert requests.post(url + "/predictions", json={"input": {"text": "h"}}, timeout=30).json()["output"] == "hi h"
    redis_srv.add("q", {"id": "p1", "input": {"text": "q"}, "webhook": rx.url})
    assert rx.wait_terminal("p1")["output"] == "hi q"


# ---- responses ----


def test_response_sequence_echoes_the_message_and_adds_nothing_else(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=STREAMING)
    msg = {"id": "p1", "input": {"n": 2}, "webhook": rx.url, "extra_key": {"kept": True}}
    redis_srv.add("q", msg)
    rx.wait_terminal("p1")
    time.sleep(0.2)
    got = bodies(rx, "p1")
    # each response is its own request: they may arrive in any order
    final = [b for b in got if b["status"] != "processing"]
    assert len(final) == 1
    final, rest = final[0], [b for b in got if b["status"] == "processing"]
    start = [b for b in rest if b["logs"] == "" and b["output"] is None]
    assert len(start) == 1
    start = start[0]
    assert start == dict(msg, status="processing", output=None, logs="", started_at=start["started_at"])
    assert TS_RE.match(start["started_at"])
    # logs: one per line, everything so far; output: one per item, the list so far
    assert sorted({b["logs"] for b in rest}) == ["", "line 0\n", "line 0\nline 1\n"]
    outputs = {json.dumps(b["output"]) for b in rest if b["output"]}
    assert outputs == {json.dumps(["item0"]), json.dumps(["item0", "item1"])}
    for b in rest:
        assert set(b) == set(msg) | {"status", "output", "logs", "started_at"}
    assert set(final) == set(msg) | {"status", "output", "logs", "started_at", "completed_at", "metrics"}
    assert final["status"] == "succeeded" and final["output"] == ["item0", "item1"]
    assert final["logs"] == "line 0\nline 1\n"
    assert TS_RE.match(final["completed_at"])
    assert isinstance(final["metrics"]["predict_time"], float)
    hit = rx.terminal("p1")[0]
    assert hit.headers["content-type"] == "application/json"


def test_a_plain_return_value_sends_no_output_response(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    redis_srv.add("q", {"id": "p1", "input": {"text": "a"}, "webhook": rx.url})
    final = rx.wait_terminal("p1")
    assert final["output"] == "hi a"
    time.sleep(0.1)
    assert all(b["output"] is None for b in bodies(rx, "p1") if b["status"] == "processing")


def test_message_without_id_gets_none_added(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    redis_srv.add("q", {"input": {"text": "a"}, "webhook": rx.url, "tag": "t1"})
    hits = rx.wait_for(lambda hs: any(h.body.get("status") == "succeeded" for h in hs))
    final = [h.body for h in hits if h.body.get("status") == "succeeded"][0]
    assert "id" not in final and final["tag"] == "t1"


@pytest.mark.parametrize(
    "events, want",
    [
        (["completed"], ["succeeded"]),
        (["start"], ["processing", "succeeded"]),
        (["logs", "completed"], None),  # logs responses, no start
    ],
)
def test_events_filter(redis_srv, make_consumer, make_receiver, events, want):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=STREAMING)
    redis_srv.add("q", {"id": "p1", "input": {"n": 2}, "webhook": rx.url, "webhook_events_filter": events})
    rx.wait_terminal("p1")
    time.sleep(0.1)
    got = bodies(rx, "p1")
    if want is not None:
        assert sorted(b["status"] for b in got) == want
    else:
        assert sorted(b["logs"] for b in got if b["status"] == "processing") == ["line 0\n", "line 0\nline 1\n"]


def test_throttle_thins_non_terminal_responses(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=STREAMING, env={"COG_THROTTLE_RESPONSE_INTERVAL": "30"})
    redis_srv.add("q", {"id": "p1", "input": {"n": 5}, "webhook": rx.url})
    rx.wait_terminal("p1")
    time.sleep(0.1)
    got = bodies(rx, "p1")
    assert sorted(b["status"] for b in got) == ["processing", "succeeded"]
    assert rx.terminal("p1")[0].body["output"] == ["item%d" % i for i in range(5)]


def test_terminal_response_is_retried_and_only_then_acknowledged(redis_srv, make_consumer, make_receiver):
    rx = make_receiver([500, 503, 429, 200], default=200)  # start fails (ignored), terminal retried
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url, "webhook_events_filter": ["start", "completed"]})
    rx.wait_for(lambda hs: len(hs) >= 4, what="the retried terminal")
    got = bodies(rx, "p1")
    assert sorted(b["status"] for b in got) == ["processing", "succeeded", "succeeded", "succeeded"]
    redis_srv.wait_pending("q", 0)
    assert redis_srv.client.xlen("q") == 0


def test_acknowledged_only_after_the_terminal_is_delivered(redis_srv, make_consumer, make_receiver):
    rx = make_receiver(hang=True)
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url, "webhook_events_filter": ["completed"]})
    rx.wait_count(1)
    time.sleep(0.3)
    assert redis_srv.pending("q") == 1 and redis_srv.client.xlen("q") == 1


def test_response_queue_is_set_when_there_is_no_webhook(redis_srv, make_consumer):
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    redis_srv.add("q", {"id": "p1", "input": {"text": "r"}, "response_queue": "resp:p1"})
    def terminal():
        v = redis_srv.client.get("resp:p1")
        v = json.loads(v) if v else None
        return v if v and v["status"] == "succeeded" else None

    final = wait_until(terminal, what="the response key")
    assert final["output"] == "hi r" and final["response_queue"] == "resp:p1"
    assert redis_srv.client.ttl("resp:p1") == -1
    redis_srv.wait_pending("q", 0)



def test_large_messages_with_protocol_like_text_arrive_whole(redis_srv, make_consumer, make_receiver):
    """Our commands are written in Redis's protocol by our own code: text that looks like that
    protocol (CR LF, "$5", "*3"), non-ASCII and a value far past one write's stack buffer
    come back byte for byte, in the webhook, in the response key, and in the record a
    redelivery is answered from (the entries are acknowledged, so the commands parsed)."""
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    text = ("\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n" + "h\u00e9llo \u2603 \"q\" " * 3000)[:60000]
    redis_srv.add("q", {"id": "big1", "input": {"text": text}, "webhook": rx.url, "pad": "$" * 5000})
    final = rx.wait_terminal("big1")
    assert final["output"] == "hi " + text and final["pad"] == "$" * 5000
    redis_srv.add("q", {"id": "big2", "input": {"text": text}, "response_queue": "resp:big2"})

    def terminal():
        v = redis_srv.client.get("resp:big2")
        v = json.loads(v) if v else None
        return v if v and v["status"] == "succeeded" else None

    assert wait_until(terminal, what="the response key")["output"] == "hi " + text
    redis_srv.wait_pending("q", 0)
    assert redis_srv.client.xlen("q") == 0

def test_cancel_key(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=GATED)
    gate = str(tmp_path / "never")
    redis_srv.add("q", {"id": "p1", "input": {"gate": gate}, "webhook": rx.url, "cancel_key": "cancel:p1"})
    rx.wait_count(1, "p1")
    redis_srv.client.set("cancel:p1", "1")
    final = rx.wait_terminal("p1")
    assert final["status"] == "canceled"
    assert "error" not in final and "metrics" not in final
    redis_srv.wait_pending("q", 0)


def test_predict_timeout_fails_and_keeps_outputs(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    code = """
import time
from typing import Iterator
from cog import BasePredictor
class Predictor(BasePredictor):
    def predict(self) -> Iterator[str]:
        yield "first"
        for _ in range(6000):  # small steps: a cancel lands between them
            time.sleep(0.01)
        yield "never"
"""
    make_consumer(redis_srv, "q", "c1", code=code, args=("--predict-timeout", "0.5"))
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
    final = rx.wait_terminal("p1", timeout=20)
    assert final["status"] == "failed" and final["error"] == "Prediction timed out"
    assert final["output"] == ["first"]


# ---- outcomes ----


def test_invalid_input_only_a_completed_response(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    msg = {"id": "p1", "input": {"n": "many"}, "webhook": rx.url}
    redis_srv.add("q", msg)
    final = rx.wait_terminal("p1")
    assert final == dict(msg, status="failed", output=None, logs="", error=final["error"])
    assert "n" in final["error"] and "integer" in final["error"]
    redis_srv.add("q", {"id": "p2", "input": {"n": 2}, "webhook": rx.url})
    assert rx.wait_terminal("p2")["output"] == "hi xx"  # the worker carries on
    assert len(bodies(rx, "p1")) == 1


def test_predictor_error_message_and_traceback(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    code = """
from cog import BasePredictor
class Predictor(BasePredictor):
    def predict(self, fail: bool = True) -> str:
        print("before")
        if fail:
            raise ValueError("it broke")
        return "fine"
"""
    make_consumer(redis_srv, "q", "c1", code=code)
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
    final = rx.wait_terminal("p1")
    assert final["status"] == "failed" and final["error"] == "it broke"
    assert final["logs"].startswith("before\n")
    assert "Traceback (most recent call last)" in final["logs"] and "ValueError: it broke" in final["logs"]
    assert "metrics" not in final
    redis_srv.add("q", {"id": "p2", "input": {"fail": False}, "webhook": rx.url})
    assert rx.wait_terminal("p2")["output"] == "fine"


def test_concurrent_async_failures_each_report_their_own_exception(redis_srv, make_consumer, make_receiver):
    """Async predictions share the worker's loop thread: each failed response carries its
    own exception's text and traceback, never another's, and a later success none."""
    rx = make_receiver()
    code = """
import asyncio
from cog import BasePredictor
class Predictor(BasePredictor):
    async def predict(self, tag: str = "", delay: float = 0.0) -> str:
        await asyncio.sleep(delay)
        if tag:
            raise RuntimeError("failure " + tag)
        return "fine"
"""
    make_consumer(redis_srv, "q", "c1", code=code, env={"COG_MAX_CONCURRENCY": "4"})
    tags = ["a", "b", "c", "d"]
    for i, tag in enumerate(tags):  # they end in the reverse order of their start
        redis_srv.add("q", {"id": "p-" + tag, "input": {"tag": tag, "delay": 0.3 - 0.08 * i}, "webhook": rx.url})
    for tag in tags:
        final = rx.wait_terminal("p-" + tag)
        assert final["status"] == "failed" and final["error"] == "failure " + tag, final
        assert "RuntimeError: failure %s" % tag in final["logs"], final["logs"]
        others = [t for t in tags if t != tag]
        assert not any("failure %s" % t in final["logs"] for t in others), final["logs"]
    redis_srv.add("q", {"id": "p-ok", "input": {}, "webhook": rx.url})
    final = rx.wait_terminal("p-ok")
    assert final["status"] == "succeeded" and final["output"] == "fine" and "error" not in final, final


def test_worker_death(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    code = """
import os
from cog import BasePredictor
class Predictor(BasePredictor):
    def predict(self) -> str:
        os._exit(3)
"""
    c = make_consumer(redis_srv, "q", "c1", code=code)
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
    final = rx.wait_terminal("p1", timeout=20)
    assert final["status"] == "failed"
    assert final["error"] == "Prediction failed for an unknown reason. It might have run out of memory? (exitcode 3)"
    redis_srv.wait_pending("q", 0)
    assert c.wait_exit() == 0


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"value": "{not json"}, "not JSON"),
        ({"value": json.dumps({"input": {}})}, "neither webhook nor response_queue"),
        ({"value": json.dumps({"input": {}, "webhook": "http://127.0.0.1:1/x", "webhook_events_filter": ["bogus"]})},
         "unknown webhook event bogus"),
        ({"other": "x"}, "no value field"),
    ],
)
def test_bad_messages_are_logged_and_left_pending(redis_srv, make_consumer, make_receiver, fields, reason):
    rx = make_receiver()
    c = make_consumer(redis_srv, "q", "c1", code=ECHO)
    bad = redis_srv.add_raw("q", fields)
    redis_srv.add("q", {"id": "good", "input": {}, "webhook": rx.url})
    assert rx.wait_terminal("good")["status"] == "succeeded"
    line = c.wait_log(re.escape(bad))
    assert reason in line
    redis_srv.wait_pending("q", 1)
    assert redis_srv.client.xpending_range("q", "q", "-", "+", 10)[0]["message_id"] == bad


def test_a_down_webhook_delays_only_its_own_acknowledgement(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    stuck = redis_srv.add("q", {"id": "p1", "input": {}, "webhook": refusing_url()})
    redis_srv.add("q", {"id": "p2", "input": {}, "webhook": rx.url})
    assert rx.wait_terminal("p2")["status"] == "succeeded"
    redis_srv.wait_pending("q", 1)
    assert redis_srv.client.xpending_range("q", "q", "-", "+", 10)[0]["message_id"] == stuck


# ---- files, setup, exit ----


def test_file_output_upload_follows_redirects_and_strips_the_query(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    up = make_receiver(["redirect 307 /final/out.txt?sig=abc"])
    code = """
from cog import BasePredictor, Path
class Predictor(BasePredictor):
    def predict(self) -> Path:
        p = Path("/tmp/coglet-queue-out.txt")
        p.write_text("payload")
        return p
"""
    make_consumer(redis_srv, "q", "c1", code=code, args=("--upload-url", "http://127.0.0.1:%d/up/" % up.port))
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url})
    final = rx.wait_terminal("p1")
    assert final["output"] == "http://127.0.0.1:%d/final/out.txt" % up.port
    puts = up.snapshot()
    assert puts[0].path == "/up/coglet-queue-out.txt"
    assert puts[0].headers["content-type"].startswith("text/plain")
    assert puts[-1].raw == b"payload"


def test_setup_report_and_setup_time_stream(redis_srv, make_consumer, make_receiver):
    report = make_receiver()
    code = """
from cog import BasePredictor
class Predictor(BasePredictor):
    def setup(self):
        print("loading weights")
    def predict(self) -> str:
        return "ok"
"""
    make_consumer(redis_srv, "q", "c1", code=code, args=("--report-setup-run-url", report.url))
    body = report.wait_count(1)[0].body
    assert set(body) == {"status", "started_at", "completed_at", "logs"}
    assert body["status"] == "succeeded" and "loading weights" in body["logs"]
    assert TS_RE.match(body["started_at"]) and TS_RE.match(body["completed_at"])
    entries = wait_until(lambda: redis_srv.client.xrange("q-setup-time"), what="q-setup-time")
    assert float(entries[0][1]["duration"]) >= 0


def test_failed_setup_reports_claims_nothing_and_exits_0(redis_srv, make_consumer, make_receiver):
    report = make_receiver()
    code = """
from cog import BasePredictor
class Predictor(BasePredictor):
    def setup(self):
        print("about to fail")
        raise RuntimeError("no weights")
    def predict(self) -> str:
        return "ok"
"""
    redis_srv.create_group("q")
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": report.url})
    c = make_consumer(redis_srv, "q", "c1", code=code, args=("--report-setup-run-url", report.url), wait=None)
    assert c.wait_exit() == 0
    body = report.wait_count(1)[0].body
    assert body["status"] == "failed"
    assert "about to fail" in body["logs"] and "no weights" in body["logs"]
    assert len(report.snapshot()) == 1
    assert redis_srv.pending("q") == 0 and redis_srv.client.xlen("q") == 1
    assert len(redis_srv.client.xrange("q-setup-time")) == 1  # written on failure too, as the original


def test_sigterm_finishes_and_acknowledges_what_runs(redis_srv, make_consumer, make_receiver, tmp_path):
    rx = make_receiver()
    gate = tmp_path / "gate"
    c = make_consumer(redis_srv, "q", "c1", code=GATED)
    redis_srv.add("q", {"id": "p1", "input": {"gate": str(gate)}, "webhook": rx.url})
    rx.wait_count(1, "p1")
    c.proc.send_signal(signal.SIGTERM)
    c.wait_log("stopping: claiming nothing new")
    wait_until(lambda: redis_srv.client.info("clients")["blocked_clients"] == 0, what="the read released")
    redis_srv.add("q", {"id": "p2", "input": {}, "webhook": rx.url})
    gate.write_text("")
    assert c.wait_exit() == 0
    assert rx.terminal("p1")[0].body["status"] == "succeeded"
    assert rx.for_id("p2") == []
    assert redis_srv.pending("q") == 0 and redis_srv.client.xlen("q") == 1  # p2 left for others


def _stop_with_an_ack_waiting(redis_srv, make_consumer, make_receiver, tmp_path, stop):
    """One prediction running while the consumer is told to stop (the first signal), its
    acknowledgement held back (COGLET_QUEUE_ACK_DELAY 30 s) once the terminal webhook is
    delivered; `stop(consumer, receiver)` ends it. Then: one terminal webhook, and the entry
    acknowledged and deleted, never left pending to be redelivered (and its terminal
    webhook sent a second time)."""
    rx = make_receiver()
    gate = tmp_path / "gate"
    c = make_consumer(redis_srv, "q", "c1", code=GATED, env={"COGLET_QUEUE_ACK_DELAY": "30"})
    redis_srv.add("q", {"id": "p1", "input": {"gate": str(gate)}, "webhook": rx.url})
    rx.wait_count(1, "p1")
    stop(c, rx, lambda: gate.write_text(""))
    assert [h.body["status"] for h in rx.terminal("p1")] == ["succeeded"]
    assert redis_srv.pending("q") == 0 and redis_srv.client.xlen("q") == 0, c.log_text()


def test_an_ack_still_waiting_is_written_when_shutdown_gives_up_on_deliveries(redis_srv, make_consumer,
                                                                              make_receiver, tmp_path):
    """SIGTERM: the shutdown's wait for deliveries runs out before the ack's delay does, and
    abandons the message; its ack must still go out."""

    def stop(c, rx, open_gate):
        c.proc.send_signal(signal.SIGTERM)
        c.wait_log("stopping: claiming nothing new")
        open_gate()
        assert c.wait_exit() == 0

    _stop_with_an_ack_waiting(redis_srv, make_consumer, make_receiver, tmp_path, stop)


def test_a_second_sigint_still_writes_the_waiting_ack(redis_srv, make_consumer, make_receiver, tmp_path):
    """A second SIGINT gives up on everything at once and closes Redis without waiting for
    replies: the waiting ack is still written before the connection goes."""

    def stop(c, rx, open_gate):
        c.proc.send_signal(signal.SIGINT)
        c.wait_log("stopping: claiming nothing new")
        open_gate()
        rx.wait_terminal("p1")  # delivered: its ack now waits for a write to join
        time.sleep(0.2)
        c.proc.send_signal(signal.SIGINT)
        c.wait_log("Second SIGINT")
        c.wait_exit()

    _stop_with_an_ack_waiting(redis_srv, make_consumer, make_receiver, tmp_path, stop)


def test_max_failure_count(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    code = """
from cog import BasePredictor
class Predictor(BasePredictor):
    def predict(self, fail: bool = True) -> str:
        if fail:
            raise ValueError("bad")
        return "ok"
"""
    c = make_consumer(redis_srv, "q", "c1", code=code, args=("--max-failure-count", "2"))
    redis_srv.add("q", {"id": "a", "input": {}, "webhook": rx.url})
    redis_srv.add("q", {"id": "b", "input": {}, "webhook": rx.url})
    redis_srv.add("q", {"id": "ok", "input": {"fail": False}, "webhook": rx.url})  # resets the count
    for i in range(3):
        redis_srv.add("q", {"id": "f%d" % i, "input": {}, "webhook": rx.url})
    assert c.wait_exit() == 0
    assert c.wait_log("Had 3 failures in a row")
    assert [rx.terminal(i)[0].body["status"] for i in ("a", "b", "ok", "f0", "f1", "f2")] == [
        "failed", "failed", "succeeded", "failed", "failed", "failed"]


def test_traceparent_is_carried_into_the_webhooks(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    make_consumer(redis_srv, "q", "c1", code=ECHO)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    redis_srv.add("q", {"id": "p1", "input": {}, "webhook": rx.url, "traceparent": tp})
    rx.wait_terminal("p1")
    time.sleep(0.1)
    assert {h.headers.get("traceparent") for h in rx.for_id("p1")} == {tp}
    assert rx.terminal("p1")[0].body["traceparent"] == tp


def test_cli_and_serve_arguments(tmp_path):
    import subprocess
    import sys

    import coglet

    (tmp_path / "predict.py").write_text(ECHO)
    with pytest.raises(ValueError, match="input_queue and consumer_id"):
        coglet.server.serve(predictor_ref="predict.py:Predictor", redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="need redis_url"):
        coglet.server.serve(predictor_ref="predict.py:Predictor", input_queue="q")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "coglet", "predict.py:Predictor", *args], cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=60 * SLOW)

    r = run("--redis-url", "redis://127.0.0.1:1/0")
    assert r.returncode == 2 and "--redis-url needs --input-queue and --consumer-id" in r.stderr
    r = run("--input-queue", "q")
    assert r.returncode == 2 and "need --redis-url" in r.stderr
    r = run("--redis-url", "http://127.0.0.1:1", "--input-queue", "q", "--consumer-id", "c")
    assert r.returncode != 0 and "invalid redis_url: http://127.0.0.1:1" in r.stderr
    # a port past int's range is refused, not cut down to 5000 (and served: run's timeout)
    r = run("--port", str(2**32 + 5000))
    assert r.returncode != 0 and "OverflowError" in r.stderr, r.stderr


def test_worker_restart_keeps_the_consumer(redis_srv, make_consumer, make_receiver):
    rx = make_receiver()
    code = """
import os
from cog import BasePredictor
class Predictor(BasePredictor):
    def predict(self, crash: bool = False) -> str:
        if crash:
            os._exit(3)
        return "alive %d" % os.getpid()
"""
    c = make_consumer(redis_srv, "q", "c1", code=code,
                      env={"COGLET_RESTART_WORKER": "1", "COGLET_RESTART_BACKOFF": "0.1"})
    redis_srv.add("q", {"id": "p1", "input": {"crash": True}, "webhook": rx.url})
    assert rx.wait_terminal("p1", timeout=20)["error"].endswith("(exitcode 3)")
    redis_srv.add("q", {"id": "p2", "input": {}, "webhook": rx.url})
    assert rx.wait_terminal("p2", timeout=30)["output"].startswith("alive ")
    assert c.proc.poll() is None
    redis_srv.wait_pending("q", 0)
