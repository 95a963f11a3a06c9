"""Nothing lost (docs/operations.md#failure-modes): 200 async predictions with webhooks, some
succeeding, some failing, some canceled, while the webhook target is down (connections
refused), then up but failing (503), then back: every prediction gets exactly one terminal
webhook that the target accepted, with its outcome, and none after it."""

import json
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
