"""Nothing lost (docs/operations.md#failure-modes): 200 async predictions with webhooks, some
succeeding, some failing, some canceled, while the webhook target is down (connections
refused), then up but failing (503), then back: every prediction gets exactly one terminal
webhook that the target accepted, with its outcome, and none after it. And a target that
answers nothing holds a bounded number of a prediction's webhooks, the terminal one last."""

import http.server
import json
import threading
import time

import requests

from conftest import SLOW, free_port
from receivers import TERMINAL, Receiver

N = 200
FAILING_ANSWERS = 150  # the target, once up, answers this many requests 503 first

PREDICTOR = """
import asyncio


class Predictor:
    async def predict(self, i: int, outcome: str = "succeed") -> str:
        print("prediction %d" % i)
        if outcome == "fail":
            raise ValueError("failed on purpose %d" % i)
        if outcome == "cancel":
            await asyncio.sleep(60)
        await asyncio.sleep(0.01)
        return "out %d" % i
"""

EXPECTED = {"succeed": "succeeded", "fail": "failed", "cancel": "canceled"}


def outcome_of(i):
    return {0: "fail", 1: "cancel"}.get(i % 10, "succeed")


def create(srv, i, url):
    body = {"id": "nl-%03d" % i, "input": {"i": i, "outcome": outcome_of(i)}, "webhook": url}
    deadline = time.time() + 60 * SLOW
    while True:
        r = requests.post(srv.url + "/predictions", json=body, headers={"Prefer": "respond-async"},
                          timeout=30 * SLOW)
        if r.status_code != 409:  # every slot busy: try again
            assert r.status_code == 202, r.text
            return
        assert time.time() < deadline, "no slot for %d" % i
        time.sleep(0.01)


def attempts_failed(srv, attempt):
    """How many terminal webhooks have failed their `attempt`-th try."""
    n = 0
    for line in list(srv.lines):
        try:
            fields = json.loads(line)["fields"]
        except (ValueError, KeyError, TypeError):
            continue
        if fields.get("message", "").startswith("terminal webhook failed") and fields.get("attempt") == attempt:
            n += 1
    return n


def test_every_prediction_gets_exactly_one_terminal_webhook(make_server):
    port = free_port()
    url = "http://127.0.0.1:%d/hook" % port  # nothing listens there yet
    srv = make_server(PREDICTOR, env={"COG_MAX_CONCURRENCY": "16", "COGLET_WEBHOOK_RETRY_BASE": "0.05"})
    for i in range(N):
        create(srv, i, url)
        if outcome_of(i) == "cancel":
            assert requests.post(srv.url + "/predictions/nl-%03d/cancel" % i, timeout=30 * SLOW).status_code == 200

    # every prediction ended, and its terminal webhook met a refused connection, three times
    deadline = time.time() + 120 * SLOW
    while attempts_failed(srv, 3) < N:
        assert time.time() < deadline, "%d of %d terminal webhooks tried 3 times" % (attempts_failed(srv, 3), N)
        time.sleep(0.1)
    assert attempts_failed(srv, 1) == N

    # the target comes up, failing first, then accepting
    rx = Receiver([503] * FAILING_ANSWERS, port=port)
    try:
        ids = ["nl-%03d" % i for i in range(N)]
        rx.wait_for(lambda hits: len(hits) > FAILING_ANSWERS and all(
            any(h.body and h.body.get("id") == pid for h in hits[FAILING_ANSWERS:]) for pid in ids),
            timeout=300, what="an accepted terminal webhook for every prediction")
        # shutting down waits for deliveries still being retried: after it, nothing more comes
        assert srv.stop() == 0
        srv.wait_log("Server shutdown complete")
        hits = rx.snapshot()
    finally:
        rx.close()

    accepted = hits[FAILING_ANSWERS:]  # the target answered these 200
    assert all(isinstance(h.body, dict) and h.body.get("status") in TERMINAL for h in hits), \
        "only terminal webhooks were still being retried"
    for i, pid in enumerate(ids):
        mine = [h for h in accepted if h.body["id"] == pid]
        assert len(mine) == 1, (pid, [h.body for h in mine])
        body = mine[0].body
        assert body["status"] == EXPECTED[outcome_of(i)], body
        if body["status"] == "succeeded":
            assert body["output"] == "out %d" % i and body["logs"] == "prediction %d\n" % i, body
        if body["status"] == "failed":
            assert body["error"] == "Prediction failed: Async prediction failed: ValueError: failed on purpose %d" % i
        # nothing for it after the accepted one
        last = max(k for k, h in enumerate(hits) if h.body["id"] == pid)
        assert hits[last] is mine[0], pid
    assert not [m for m in srv.messages() if m.startswith("giving up on terminal webhook")]


# ---- a slow target ----

GENERATOR = """
from typing import Iterator


class Predictor:
    def predict(self, n: int) -> Iterator[str]:
        for i in range(n):
            yield "item %d" % i
"""


class HoldingTarget:
    """A webhook target that holds every request until `release` is set, counting how many
    it holds at once."""

    def __init__(self):
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.held = self.most_held = 0
        self.bodies = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with owner.lock:
                    owner.bodies.append(body)
                    owner.held += 1
                    owner.most_held = max(owner.most_held, owner.held)
                owner.release.wait(60)
                with owner.lock:
                    owner.held -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # every request the server makes is accepted and held

        self.srv = Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def snapshot(self):
        with self.lock:
            return list(self.bodies)

    def close(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


def test_a_slow_target_holds_at_most_eight_event_webhooks_per_prediction(make_server):
    """500 outputs, each an `output` webhook carrying every output so far, to a target that
    answers none of them: at most 8 are in flight; the newest state waits for a free one
    (replacing older waiting ones), and the terminal webhook, with all 500, still arrives."""
    target = HoldingTarget()
    try:
        srv = make_server(GENERATOR)
        r = srv.post("/predictions", {"id": "many", "input": {"n": 500}, "webhook": target.url})
        assert r.json()["status"] == "succeeded" and len(r.json()["output"]) == 500
        deadline = time.time() + 30 * SLOW
        while not any(b["status"] == "succeeded" for b in target.snapshot()):  # the terminal one
            assert time.time() < deadline, "no terminal webhook sent"
            time.sleep(0.05)
        held = target.snapshot()
        assert target.most_held <= 8 + 1, target.most_held  # 8 events and the terminal one
        assert len([b for b in held if b["status"] == "processing"]) <= 8, len(held)
        target.release.set()
        deadline = time.time() + 30 * SLOW
        while target.held:
            assert time.time() < deadline
            time.sleep(0.05)
        bodies = target.snapshot()
        terminal = [b for b in bodies if b["status"] == "succeeded"]
        assert len(terminal) == 1 and terminal[0]["output"] == ["item %d" % i for i in range(500)]
        # nothing was freed before the terminal state existed, and it replaced the waiting one
        assert len(bodies) <= 8 + 1, len(bodies)
    finally:
        target.close()
