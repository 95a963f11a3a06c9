"""A request body is read once, by one parser: a key given twice (plain or escaped, at the top
level, inside `input`, or deeper) is a 422 naming the key, and the predictor never runs; what
is validated is what the predictor receives, for small bodies and for large ones (over 64 KiB,
whose input is forwarded as the client's own bytes). Also the nesting limit, and shape errors
that point at members written with escapes."""

import os

import pytest
import requests

from conftest import SLOW

PREDICTOR = """
class Predictor:
    def predict(self, n: int, s: str) -> dict:
        with open("ran.txt", "a") as f:
            f.write("%d\\n" % n)
        if s == "deep":
            deep = []
            for _ in range(n * 15):
                deep = [deep]
            return {"deep": deep}
        return {"n": n, "len": len(s), "head": s[:4]}
"""

SCHEMA = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "paths": {},
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "title": "Input",
                "required": ["n", "s"],
                "properties": {
                    "n": {"type": "integer", "title": "N", "maximum": 10, "x-order": 0},
                    "s": {"type": "string", "title": "S", "x-order": 1},
                },
            },
            "Output": {"type": "object", "title": "Output"},
        }
    },
}

DESERIALIZE = "Failed to deserialize the JSON body into the target type: "
SIZES = {"small": 0, "large": 70 << 10}  # the large body is over the 64 KiB raw-forwarding threshold


@pytest.fixture(scope="module")
def srv(make_module_server):
    return make_module_server(code=PREDICTOR, files={".cog/openapi_schema.json": SCHEMA})


def runs(srv):
    """How many times the predictor has run so far."""
    try:
        with open(os.path.join(srv.cwd, "ran.txt")) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def post_raw(srv, body, method="POST", path="/predictions"):
    return requests.request(
        method,
        srv.url + path,
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        timeout=60 * SLOW,
    )


def column_after(body, piece, nth=1):
    """serde's column just past the nth occurrence of `piece` in a one-line ASCII body."""
    at = -1
    for _ in range(nth):
        at = body.index(piece, at + 1)
    return at + len(piece)


def column_after_second(body, key):
    """Just past the repeated key: the second time it is written, or the one escaped form."""
    return column_after(body, key, 1 if "\\u" in key else 2)


def assert_rejected(srv, body, text):
    before = runs(srv)
    r = post_raw(srv, body)
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    assert r.text == DESERIALIZE + text, r.text[:300]
    assert runs(srv) == before, "the predictor ran"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("second", ['"input"', '"\\u0069nput"'])
def test_duplicate_input_is_422_and_never_runs(srv, size, second):
    # The first `input` is invalid (n > 10); the second would pass validation. Whichever
    # the parser kept, what reached the predictor must be what was validated: neither is.
    pad = "p" * SIZES[size]
    body = '{"input":{"n":999,"s":"%s"},%s:{"n":5,"s":"ok"}}' % (pad, second)
    assert_rejected(srv, body, "duplicate field `input` at line 1 column %d" % column_after_second(body, second))
    # and the other way round
    body = '{"input":{"n":5,"s":"ok"},%s:{"n":999,"s":"%s"}}' % (second, pad)
    assert_rejected(srv, body, "duplicate field `input` at line 1 column %d" % column_after_second(body, second))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("second", ['"s"', '"\\u0073"'])
def test_duplicate_key_inside_input_is_422(srv, size, second):
    pad = "q" * SIZES[size]
    body = '{"input":{"n":5,"s":"%s",%s:"b"}}' % (pad, second)
    assert_rejected(srv, body, "input: duplicate field `s` at line 1 column %d" % column_after_second(body, second))


@pytest.mark.parametrize("size", SIZES)
def test_duplicate_key_deeper_is_422(srv, size):
    # `extra` is not in the schema and would be stripped: rejected all the same
    pad = "r" * SIZES[size]
    body = '{"input":{"n":5,"s":"%s","extra":[{"a":1},{"a":1,"\\u0061":2}]}}' % pad
    text = "input.extra[1]: duplicate field `a` at line 1 column %d" % column_after(body, '"\\u0061"')
    assert_rejected(srv, body, text)
    body = '{"input":{"n":5,"s":"%s"},"context":{"k":"v","k":"w"}}' % pad
    assert_rejected(srv, body, "context: duplicate field `k` at line 1 column %d" % column_after(body, '"k"', 2))


def test_duplicate_on_put_and_multi_line(srv):
    before = runs(srv)
    body = '{\n  "id": "dup-put",\n  "input": {"n": 1, "s": "x"},\n  "id": "other"\n}'
    r = post_raw(srv, body, method="PUT", path="/predictions/dup-put")
    assert r.status_code == 422, r.text
    assert r.text == DESERIALIZE + "duplicate field `id` at line 4 column 6"
    assert runs(srv) == before


@pytest.mark.parametrize("size", SIZES)
def test_escaped_keys_without_duplicates_reach_the_predictor(srv, size):
    # the same keys written with escapes are the same keys: validated, and received as sent
    pad = "e\\u00e9" * (SIZES[size] // 7) + "tail"
    body = '{"\\u0069nput":{"\\u006e":7,"\\u0073":"%s"}}' % pad
    expected = ("e\u00e9" * (SIZES[size] // 7)) + "tail"
    before = runs(srv)
    r = post_raw(srv, body)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["output"] == {"n": 7, "len": len(expected), "head": expected[:4]}
    assert runs(srv) == before + 1
    # an escaped key whose value fails validation is caught too
    r = post_raw(srv, body.replace(":7,", ":70,"))
    assert r.status_code == 422, r.text[:300]
    assert r.json()["detail"][0]["msg"] == "70 is greater than the maximum of 10"
    assert runs(srv) == before + 1


def test_nesting_limit_is_a_400(srv):
    # body, input, then arrays: 127 levels in all parse (the unknown key is stripped) ...
    ok = '{"input":{"n":1,"s":"x","deep":%s}}' % ("[" * 125 + "]" * 125)
    r = post_raw(srv, ok)
    assert r.status_code == 200, r.text[:300]
    # ... and the 128th is refused where it opens, as serde_json refuses it
    deep = '{"input":{"n":1,"s":"x","deep":%s}}' % ("[" * 126 + "]" * 126)
    before = runs(srv)
    r = post_raw(srv, deep)
    assert r.status_code == 400, r.text[:300]
    column = deep.index("[") + 126
    assert r.text == "Failed to parse the request body as JSON: recursion limit exceeded at line 1 column %d" % column
    assert runs(srv) == before
    # far deeper: the same answer, and the server is fine afterwards
    r = post_raw(srv, "[" * 1000000)
    assert r.status_code == 400 and "recursion limit exceeded at line 1 column 128" in r.text, r.text[:300]
    assert srv.predict({"n": 2, "s": "after"}).json()["output"]["n"] == 2


def test_deep_outputs_come_back(srv):
    # frames from the worker are read with a deeper limit (512) than bodies (127): an output as
    # deep as the worker encodes (it stops at 100 levels, docs/predictors.md) arrives whole:
    # here 75 and 90 levels
    for n in (5, 6):
        r = srv.predict({"n": n, "s": "deep"})
        assert r.status_code == 200, r.text[:300]
        body = r.json()
        assert body["status"] == "succeeded", body
        depth, v = 0, body["output"]["deep"]
        while v:
            depth, v = depth + 1, v[0]
        assert depth == n * 15


def test_shape_errors_point_past_escaped_members(srv):
    # positions come from the parse, which reads `\u0069d` as `id`
    r = post_raw(srv, '{"\\u0069d": 5}')
    assert r.status_code == 422
    assert r.text == DESERIALIZE + "id: invalid type: integer `5`, expected a string at line 1 column 13"
    body = '{"input":{"n":1,"s":"x"},\n "\\u0063ontext": {"a": "b",\n  "\\u0063": 7}}'
    r = post_raw(srv, body)
    assert r.status_code == 422
    assert r.text == DESERIALIZE + "context.c: invalid type: integer `7`, expected a string at line 3 column 13"
    body = '{"webhook_events_filter": ["start",\n "logs", "nope"]}'
    r = post_raw(srv, body)
    assert r.status_code == 422
    assert r.text == (
        DESERIALIZE + "webhook_events_filter[2]: invalid type: string \"nope\", expected one of "
        "`start`, `output`, `logs`, `completed` at line 2 column 15"
    )
    r = post_raw(srv, ' [1, 2] ')
    assert r.status_code == 422
    assert r.text == DESERIALIZE + "invalid type: sequence, expected struct PredictionRequest at line 1 column 7"
