"""A returned list goes out as output_items frames (docs/worker-protocol.md#slot-messages): runs
of inline items in one frame, file outputs and values too big for a frame in their place, the
whole in order. Real server, real worker."""

import base64

import pytest

from conftest import SLOW

LISTS = """
import datetime
import os

from cog import Path


class Predictor:
    def setup(self):
        self.file = "/tmp/coglet-test-list-item.txt"
        with open(self.file, "w") as f:
            f.write("file item")

    def predict(self, mode: str = "floats") -> list:
        if mode == "floats":
            return [i / 7 for i in range(384)]
        if mode == "tuple":
            return tuple(range(5))
        if mode == "mixed":
            return [1, "a" * (5 << 20), Path(self.file), 2.5, "b" * (9 << 20), {"k": [None, True]}]
        if mode == "bad_late":
            print("before the list")
            return [1, 2, datetime.date(2024, 1, 1), 4]
        if mode == "empty":
            return []
        raise ValueError(mode)
"""


@pytest.fixture(scope="module")
def lists(make_module_server):
    srv = make_module_server(code=LISTS)
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


def post(srv, mode):
    r = srv.predict({"mode": mode}, timeout=120 * SLOW)
    assert r.status_code == 200, r.text[:500]
    return r.json()


def test_list_of_floats_in_order(lists):
    body = post(lists, "floats")
    assert body["status"] == "succeeded", body
    assert body["output"] == [i / 7 for i in range(384)]


def test_tuple_and_empty(lists):
    assert post(lists, "tuple")["output"] == [0, 1, 2, 3, 4]
    assert post(lists, "empty")["output"] == []


def test_mixed_list_keeps_every_item_in_its_place(lists):
    body = post(lists, "mixed")
    assert body["status"] == "succeeded", str(body)[:500]
    out = body["output"]
    assert len(out) == 6
    assert out[0] == 1 and out[3] == 2.5 and out[5] == {"k": [None, True]}
    assert out[1] == "a" * (5 << 20)  # its own frame
    assert out[4] == "b" * (9 << 20)  # over a frame: spilled
    assert out[2] == "data:text/plain;base64," + base64.b64encode(b"file item").decode()


def test_bad_item_late_in_a_list_fails_it(lists):
    body = post(lists, "bad_late")
    assert body["status"] == "failed", body
    assert body["error"].startswith("Prediction failed: Failed to serialize output item: TypeError"), body
    assert post(lists, "tuple")["output"] == [0, 1, 2, 3, 4]
