"""Integers of any size, exactly, end to end: a JSON integer beyond 64 bits reaches the
predictor as the Python int json.loads gives (not a float), validation bounds compare it
exactly, and an int the predictor returns, yields or records as a metric comes back as the
digits json.dumps writes. Real server, real worker."""

import json
import sys

import pytest

BIG = 10**30

CODE = """
from typing import Iterator, List

from cog import BasePredictor, Input, current_scope


class Predictor(BasePredictor):
    def predict(
        self,
        mode: str = "echo",
        n: int = Input(default=0, le=10**30, ge=-(10**30)),
        items: List[int] = Input(default=[]),
        x: float = Input(default=0.0),
    ) -> object:
        if mode == "echo":
            return {"type": type(n).__name__, "repr": repr(n), "n": n, "plus_one": n + 1,
                    "items": [repr(i) for i in items], "x": repr(x)}
        if mode == "output":
            return {"big": 10**30 + 1, "neg": -(2**70), "list": [2**64, -(2**63) - 1, 2**63 - 1]}
        if mode == "metrics":
            scope = current_scope()
            scope.record_metric("big", 2**70)
            scope.record_metric("count", 2**63 - 1, "incr")
            scope.record_metric("count", 1, "incr")
            scope.record_metric("nested", {"v": [-(10**40)]})
            return "ok"
        if mode == "stream":
            return (v for v in (10**30, -(10**30), 7))
        if mode == "too_many_digits":
            return 10**5000
        raise ValueError(mode)
"""


@pytest.fixture(scope="module")
def srv(make_module_server):
    server = make_module_server(code=CODE)
    assert server.health()["status"] == "READY", server.log_text()
    return server


def predict_raw(srv, text):
    """POST a body written by hand, so the digits are exactly ours."""
    return srv.post("/predictions", data=text, headers={"Content-Type": "application/json"})


def test_a_30_digit_integer_reaches_the_predictor_as_an_int(srv):
    n = 123456789012345678901234567890
    r = predict_raw(srv, '{"input":{"n":%d,"items":[%d,-%d,5]}}' % (n, 2**64, 2**65))
    assert r.status_code == 200, r.text
    out = r.json()["output"]
    assert out["type"] == "int" and out["repr"] == repr(n), out
    assert out["n"] == n and out["plus_one"] == n + 1, out
    assert out["items"] == [repr(2**64), repr(-(2**65)), "5"], out
    # and it is written back as digits, not as 1.2345678901234568e+29
    assert '"n":123456789012345678901234567890' in r.text, r.text


def test_the_le_bound_is_compared_exactly(srv):
    r = predict_raw(srv, '{"input":{"n":%d}}' % BIG)
    assert r.status_code == 200, r.text
    assert r.json()["output"]["repr"] == repr(BIG)
    r = predict_raw(srv, '{"input":{"n":%d}}' % (BIG + 1))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [{
        "loc": ["body", "input", "n"],
        "msg": "%d is greater than the maximum of %d" % (BIG + 1, BIG),
        "type": "value_error",
    }], r.text
    r = predict_raw(srv, '{"input":{"n":-%d}}' % BIG)
    assert r.status_code == 200, r.text
    r = predict_raw(srv, '{"input":{"n":-%d}}' % (BIG + 1))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"] == "-%d is less than the minimum of -%d" % (BIG + 1, BIG)


def test_the_schema_keeps_the_bounds_exact(srv):
    r = srv.get("/openapi.json")
    assert r.status_code == 200
    assert '"maximum":1000000000000000000000000000000' in r.text.replace(" ", ""), r.text[:2000]
    n = json.loads(r.text)["components"]["schemas"]["Input"]["properties"]["n"]
    assert n["maximum"] == BIG and type(n["maximum"]) is int, n


def test_a_big_integer_is_no_string_and_no_float(srv):
    # a float input takes an integer (JSON Schema's number) and gets what json.loads gives,
    # an int, as it does for a small one; an int written as a string is still refused
    r = predict_raw(srv, '{"input":{"x":%d}}' % (BIG + 1))
    assert r.status_code == 200, r.text
    assert r.json()["output"]["x"] == repr(BIG + 1)
    r = predict_raw(srv, '{"input":{"x":5}}')
    assert r.json()["output"]["x"] == "5"
    r = predict_raw(srv, '{"input":{"n":"%d"}}' % BIG)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"] == '"%d" is not of type "integer"' % BIG


def test_outputs_are_the_exact_integers(srv):
    r = srv.predict({"mode": "output"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"] == {"big": 10**30 + 1, "neg": -(2**70), "list": [2**64, -(2**63) - 1, 2**63 - 1]}
    assert '"big":1000000000000000000000000000001' in r.text
    assert '"neg":-1180591620717411303424' in r.text


def test_streamed_items_are_exact(srv):
    r = srv.predict({"mode": "stream"})
    assert r.status_code == 200, r.text
    assert r.json()["output"] == [10**30, -(10**30), 7], r.text


def test_metrics_keep_exact_integers(srv):
    r = srv.predict({"mode": "metrics"})
    assert r.status_code == 200, r.text
    m = r.json()["metrics"]
    assert m["big"] == 2**70 and m["nested"] == {"v": [-(10**40)]}, m
    # int64 + int64 wraps, as before (docs/http-api.md)
    assert m["count"] == -(2**63), m


@pytest.mark.skipif(not hasattr(sys, "get_int_max_str_digits"), reason="this Python has no digit limit")
def test_an_int_past_pythons_digit_limit_fails_as_json_dumps_would(srv):
    r = srv.predict({"mode": "too_many_digits"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "failed", body
    assert "Exceeds the limit (4300 digits) for integer string conversion" in body["error"], body
    ok = srv.predict({"mode": "echo", "n": 3})
    assert ok.json()["output"]["n"] == 3


@pytest.mark.parametrize("field", ["id", "webhook"])
def test_a_big_integer_is_not_taken_for_a_string_field(srv, field):
    r = predict_raw(srv, '{"%s":%d,"input":{}}' % (field, BIG))
    assert r.status_code == 422, r.text
    assert "invalid type: floating point `1e+30`, expected a string" in r.text, r.text


def test_a_big_integer_is_not_taken_for_a_context_string(srv):
    r = predict_raw(srv, '{"context":{"k":%d},"input":{}}' % BIG)
    assert r.status_code == 422, r.text
    assert "context.k: invalid type: floating point `1e+30`, expected a string" in r.text, r.text
