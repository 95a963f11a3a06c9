"""Input validation at the edge (docs/schema.md#validation-at-the-edge,
docs/http-api.md#processing-order), through the real server
over real HTTP. Table-driven: one row per keyword / message, each with valid and invalid values.

Every server here runs an echo predictor (`predict(**kw)` returns `json.dumps(kw)`), so a row
that passes validation also shows exactly what the worker received (stripped keys absent,
injected nulls present). A row that fails must get exactly
`422 {"detail":[{"loc":["body","input",...],"msg":...,"type":"value_error"}]}`.

Servers are module-scoped, one per schema:
  kw_srv    - one property per keyword row (no `required`), plus a TrainingInput
  req_srv   - required / nullable / strip / null injection / 422-before-409 (no TrainingInput)
  fifty_srv - 50 fields at once
  bad_srv   - an Input whose pattern does not compile (TrainingInput fine)
  gen_srv   - no bundle: the schema is generated from a cog signature (Path, Input(ge=...))
"""

import json
import os
import time

import pytest

from conftest import SLOW

OK = object()  # expected: 200, succeeded, the predictor echoes the (stripped) input
REQ = "Field required"
ASYNC = {"Prefer": "respond-async"}
NOT_READY = {
    "error": "Setup has not finished yet. Wait until it has finished, or GET /health-check for status.",
    "status": "failed",
}
BUSY = {"error": "At capacity - all prediction slots busy", "status": "failed"}

ECHO = """
import json
import os
import time


class Predictor:
    def setup(self):
        gate = os.environ.get("SETUP_GATE")
        deadline = time.time() + 60
        while gate and not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.01)

    def predict(self, **kw):
        gate = kw.get("gate")
        if gate:
            open(gate + ".started", "w").close()
            deadline = time.time() + 30
            while not os.path.exists(gate) and time.time() < deadline:
                time.sleep(0.01)
        return json.dumps(kw, sort_keys=True)
"""


def openapi(**components):
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": dict(components, Output={"title": "Output", "type": "string"})},
    }


# ---- the 422 body and the row runner ----


def entry(loc, msg):
    return {
        "loc": ["body", "input", loc],
        "msg": msg,
        "type": "value_error.missing" if msg == REQ else "value_error",
    }


def expected_detail(default_loc, expected):
    """expected: a message (at default_loc), or a list of messages / (loc, message) pairs."""
    if isinstance(expected, str):
        expected = [expected]
    out = []
    for e in expected:
        loc, msg = e if isinstance(e, tuple) else (default_loc, e)
        out.append(entry(loc, msg))
    return {"detail": out}


def run_row(srv, inp, expected, path="/predictions", echo=None, default_loc=None, method="post"):
    send = srv.put if method == "put" else srv.post
    r = send(path, {"input": inp})
    if expected is OK:
        assert r.status_code == 200, "expected 200 for %r, got %d %s" % (inp, r.status_code, r.text)
        body = r.json()
        assert body["status"] == "succeeded", body
        got = json.loads(body["output"])
        want = inp if echo is None else echo
        assert got == want, "predictor received %r, expected %r" % (got, want)
        # types survive too (1.0 stays a float, 1 an int, None is null, not absent)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    else:
        want = expected_detail(default_loc, expected)
        assert r.status_code == 422, "expected 422 %s for %r, got %d %s" % (want, inp, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        assert r.json() == want, "input %r:\n  expected %s\n  got      %s" % (inp, json.dumps(want), r.text)


# =====================================================================================
# kw_srv: one property per keyword
# =====================================================================================

KW_SCHEMA = openapi(
    Input={
        "title": "Input",
        "type": "object",
        # top-level unknown keys are stripped BEFORE validation, so this never fires
        "additionalProperties": False,
        "properties": {
            "str": {"type": "string", "title": "Str", "x-order": 0},
            "int": {"type": "integer"},
            "num": {"type": "number"},
            "bool": {"type": "boolean"},
            "arr": {"type": "array"},
            "obj": {"type": "object"},
            "multi": {"type": ["string", "integer"]},
            "color": {"allOf": [{"$ref": "#/components/schemas/color"}], "default": "red", "x-order": 3},
            "enum": {"enum": [1, 2.5, "x", None]},
            "const": {"const": "fixed"},
            "constobj": {"const": {"a": 1, "b": [1, 2]}},
            "min": {"type": "integer", "minimum": 1, "maximum": 10},
            "fmin": {"type": "number", "minimum": 0.001, "maximum": 1000.0},
            "big": {"type": "integer", "minimum": 9007199254740993},
            "xbool": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1,
                      "exclusiveMaximum": True},
            "xfalse": {"type": "number", "minimum": 0, "exclusiveMinimum": False, "maximum": 1,
                       "exclusiveMaximum": False},
            "xnum": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
            "mult": {"type": "integer", "multipleOf": 3},
            "fmult": {"type": "number", "multipleOf": 0.1},
            "len": {"type": "string", "minLength": 2, "maxLength": 5},
            "len1": {"type": "string", "minLength": 1, "maxLength": 1},
            "pat": {"type": "string", "pattern": "^[a-z]+\\d{2}$"},
            "word": {"type": "string", "pattern": "^\\w+$"},
            "search": {"type": "string", "pattern": "b+"},
            "uni": {"type": "string", "pattern": "^\\p{L}+$"},
            "uesc": {"type": "string", "pattern": "^caf\\u00e9$"},
            "dot": {"type": "string", "pattern": "^.$"},
            "items": {"type": "array", "items": {"type": "integer"}},
            "count": {"type": "array", "minItems": 2, "maxItems": 3},
            "count1": {"type": "array", "minItems": 1, "maxItems": 1},
            "nested": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "string"}},
                       "required": ["x"], "additionalProperties": False},
            "dict": {"type": "object", "additionalProperties": {"type": "integer"}},
            "any": {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 2}]},
            "one": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]},
            "all": {"allOf": [{"type": "integer"}, {"minimum": 0}, {"multipleOf": 2}]},
            "deep": {"$ref": "#/components/schemas/Outer"},
            "tree": {"$ref": "#/components/schemas/Node"},
            "loop": {"$ref": "#/components/schemas/Loop"},
            "img": {"type": "string", "format": "uri"},
            "files": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "we/ird~": {"type": "integer"},
        },
    },
    color={"title": "color", "description": "An enumeration.", "enum": ["red", "green"], "type": "string"},
    Outer={"type": "object", "properties": {"inner": {"$ref": "#/components/schemas/Inner"}}},
    Inner={"type": "object", "properties": {"v": {"$ref": "#/components/schemas/Leaf"}}},
    Leaf={"type": "integer", "maximum": 5},
    Node={
        "type": "object",
        "required": ["v"],
        "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}},
    },
    Loop={"type": "string", "allOf": [{"$ref": "#/components/schemas/Loop"}]},
    TrainingInput={
        "title": "TrainingInput",
        "type": "object",
        "required": ["epochs"],
        "properties": {"epochs": {"type": "integer", "minimum": 1}, "rate": {"type": "number", "exclusiveMinimum": 0}},
    },
)


def deep_tree(n):
    node = {"v": n}
    for i in range(n - 1, 0, -1):
        node = {"v": i, "kids": [node]}
    return node


ANYOF = "is not valid under any of the schemas listed in the 'anyOf' keyword"
ONEOF_NONE = "is not valid under any of the schemas listed in the 'oneOf' keyword"
ONEOF_MANY = "is valid under more than one of the schemas listed in the 'oneOf' keyword"

# (field, value, expected): expected is OK, a message at loc=field, or a list of them
KEYWORD_ROWS = [
    # ---- type ----
    ("str", "hi", OK),
    ("str", "", OK),
    ("str", 5, '5 is not of type "string"'),
    ("str", None, 'null is not of type "string"'),  # explicit null for a typed field
    ("int", 3, OK),
    ("int", -7, OK),
    ("int", 3.0, OK),  # 2020-12: an integral real is an integer
    ("int", "x", '"x" is not of type "integer"'),
    ("int", 3.5, '3.5 is not of type "integer"'),
    ("int", True, 'true is not of type "integer"'),
    ("num", 3, OK),  # number accepts an integer
    ("num", 2.5, OK),
    ("num", "3", '"3" is not of type "number"'),
    ("num", False, 'false is not of type "number"'),
    ("bool", True, OK),
    ("bool", False, OK),
    ("bool", 0, '0 is not of type "boolean"'),
    ("bool", "true", '"true" is not of type "boolean"'),
    ("arr", [1, "a", None], OK),
    ("arr", {"b": 1, "a": 2}, '{"a":2,"b":1} is not of type "array"'),  # compact, keys sorted
    ("arr", "[]", '"[]" is not of type "array"'),
    ("obj", {"k": [1, {"z": None}]}, OK),
    ("obj", [1, 2], '[1,2] is not of type "object"'),
    ("obj", "s\"q", '"s\\"q" is not of type "object"'),
    # ---- type list ----
    ("multi", "s", OK),
    ("multi", 4, OK),
    ("multi", True, 'true is not of types "integer", "string"'),
    ("multi", 4.5, '4.5 is not of types "integer", "string"'),
    ("multi", None, 'null is not of types "integer", "string"'),
    # ---- floats in messages print like Python's repr ----
    ("obj", 10.0, '10.0 is not of type "object"'),
    ("obj", -0.0, '-0.0 is not of type "object"'),
    ("obj", 1.5, '1.5 is not of type "object"'),
    ("obj", 1e20, '1e+20 is not of type "object"'),
    ("obj", 1e16, '1e+16 is not of type "object"'),
    ("obj", 1e15, '1000000000000000.0 is not of type "object"'),
    ("obj", 1e-05, '1e-05 is not of type "object"'),
    ("obj", 0.0001, '0.0001 is not of type "object"'),
    ("obj", 0.1 + 0.2, '0.30000000000000004 is not of type "object"'),
    ("obj", 1.5e300, '1.5e+300 is not of type "object"'),
    # ---- enum (cog's choices: allOf -> $ref to an enum component) ----
    ("color", "green", OK),
    ("color", "blue", '"blue" is not one of ["red","green"]'),
    ("color", 5, ['5 is not of type "string"', '5 is not one of ["red","green"]']),
    ("enum", 2.5, OK),
    ("enum", 1.0, OK),  # numbers compare by value
    ("enum", None, OK),
    ("enum", "x", OK),
    ("enum", 3, '3 is not one of [1,2.5,"x",null]'),
    ("enum", "X", '"X" is not one of [1,2.5,"x",null]'),
    # ---- const ----
    ("const", "fixed", OK),
    ("const", "other", '"fixed" was expected'),
    ("const", None, '"fixed" was expected'),
    ("constobj", {"b": [1, 2], "a": 1.0}, OK),  # key order and 1 == 1.0 do not matter
    ("constobj", {"a": 1}, '{"a":1,"b":[1,2]} was expected'),
    # ---- minimum / maximum ----
    ("min", 1, OK),
    ("min", 10, OK),
    ("min", 0, "0 is less than the minimum of 1"),
    ("min", -5, "-5 is less than the minimum of 1"),
    ("min", 11, "11 is greater than the maximum of 10"),
    ("min", "5", '"5" is not of type "integer"'),  # bounds do not apply to strings
    ("fmin", 0.001, OK),
    ("fmin", 1000, OK),
    ("fmin", 1e-07, "1e-07 is less than the minimum of 0.001"),
    ("fmin", 0, "0 is less than the minimum of 0.001"),
    ("fmin", 1000.5, "1000.5 is greater than the maximum of 1000.0"),
    ("fmin", 1e20, "1e+20 is greater than the maximum of 1000.0"),
    ("big", 9007199254740993, OK),  # compared exactly, not through a double
    ("big", 9007199254740992, "9007199254740992 is less than the minimum of 9007199254740993"),
    # ---- exclusiveMinimum / exclusiveMaximum, OpenAPI 3.0 boolean form ----
    ("xbool", 0.5, OK),
    ("xbool", 0.001, OK),
    ("xbool", 0, "0 is less than or equal to the minimum of 0"),
    ("xbool", -1, "-1 is less than or equal to the minimum of 0"),
    ("xbool", 1, "1 is greater than or equal to the maximum of 1"),
    ("xbool", 1.0, "1.0 is greater than or equal to the maximum of 1"),
    ("xfalse", 0, OK),  # false: minimum stays inclusive
    ("xfalse", 1, OK),
    ("xfalse", -0.5, "-0.5 is less than the minimum of 0"),
    ("xfalse", 2, "2 is greater than the maximum of 1"),
    # ---- exclusiveMinimum / exclusiveMaximum, numeric form ----
    ("xnum", 0.1, OK),
    ("xnum", 9.99, OK),
    ("xnum", 0, "0 is less than or equal to the minimum of 0"),
    ("xnum", -3, "-3 is less than or equal to the minimum of 0"),
    ("xnum", 10, "10 is greater than or equal to the maximum of 10"),
    ("xnum", 10.0, "10.0 is greater than or equal to the maximum of 10"),
    # ---- multipleOf ----
    ("mult", 9, OK),
    ("mult", 0, OK),
    ("mult", -6, OK),
    ("mult", 7, "7 is not a multiple of 3"),
    ("mult", -1, "-1 is not a multiple of 3"),
    ("fmult", 0.3, OK),  # 0.3 / 0.1 is within rounding of 3
    ("fmult", 2, OK),
    ("fmult", 0.35, "0.35 is not a multiple of 0.1"),
    # ---- minLength / maxLength: characters, not bytes ----
    ("len", "ab", OK),
    ("len", "héllo", OK),  # 5 characters, 6 bytes
    ("len", "😀😀", OK),  # 2 characters, 8 bytes
    ("len", "日本語日本", OK),  # 5 characters, 15 bytes
    ("len", "a", '"a" is shorter than 2 characters'),
    ("len", "😀", '"😀" is shorter than 2 characters'),  # an emoji counts 1
    ("len", "héllo!", '"héllo!" is longer than 5 characters'),
    ("len", "abcdef", '"abcdef" is longer than 5 characters'),
    ("len1", "é", OK),
    ("len1", "😀", OK),
    ("len1", "", '"" is shorter than 1 character'),  # singular
    ("len1", "ab", '"ab" is longer than 1 character'),
    # ---- pattern (ECMA-262 flavour) ----
    ("pat", "abc12", OK),
    ("pat", "abc123", '"abc123" does not match "^[a-z]+\\d{2}$"'),
    ("pat", "Xabc12", '"Xabc12" does not match "^[a-z]+\\d{2}$"'),
    ("pat", "abc12\n", '"abc12\\n" does not match "^[a-z]+\\d{2}$"'),  # `$` only at the very end
    ("pat", "abc\u0663\u0663", '"abc\u0663\u0663" does not match "^[a-z]+\\d{2}$"'),  # ECMA \d is [0-9]
    ("word", "abc_1", OK),
    ("word", "é", '"é" does not match "^\\w+$"'),  # ECMA \w is [A-Za-z0-9_]
    ("search", "abbc", OK),  # a search, not anchored
    ("search", "xyz", '"xyz" does not match "b+"'),
    ("uni", "héllo", OK),
    ("uni", "日本語", OK),
    ("uni", "abc1", '"abc1" does not match "^\\p{L}+$"'),
    ("uesc", "café", OK),  # \uXXXX escape
    ("uesc", "cafe", '"cafe" does not match "^caf\\u00e9$"'),
    ("dot", "😀", OK),  # `.` is one code point
    ("dot", "ab", '"ab" does not match "^.$"'),
    # ---- items / minItems / maxItems ----
    ("items", [1, 2, 3], OK),
    ("items", [], OK),
    ("items", [1, "x", 3, True], [("items/1", '"x" is not of type "integer"'), ("items/3", 'true is not of type "integer"')]),
    ("count", [1, 2], OK),
    ("count", [1, 2, 3], OK),
    ("count", [1], "[1] has less than 2 items"),
    ("count", [1, 2, 3, 4], "[1,2,3,4] has more than 3 items"),
    ("count1", ["a"], OK),
    ("count1", [], "[] has less than 1 item"),  # singular
    ("count1", [1, 2], "[1,2] has more than 1 item"),
    # ---- properties / required / additionalProperties (nested object) ----
    ("nested", {"x": 1, "y": "a"}, OK),
    ("nested", {"x": 1}, OK),
    ("nested", {"x": "1"}, [("nested/x", '"1" is not of type "integer"')]),
    ("nested", {"y": "a"}, [("nested/x", REQ)]),  # nested, top level misses nothing
    ("nested", {"x": 1, "z": 2}, "Additional properties are not allowed ('z' was unexpected)"),
    ("nested", {"x": 1, "z": 2, "b": 3}, "Additional properties are not allowed ('b', 'z' were unexpected)"),
    ("nested", {"x": "1", "y": 2, "q": 0}, [("nested/x", '"1" is not of type "integer"'),
                                            ("nested/y", '2 is not of type "string"'),
                                            ("nested", "Additional properties are not allowed ('q' was unexpected)")]),
    ("dict", {"a": 1, "b": 2}, OK),
    ("dict", {"a": 1, "b": "x", "c": None}, [("dict/b", '"x" is not of type "integer"'),
                                             ("dict/c", 'null is not of type "integer"')]),
    # ---- anyOf / oneOf / allOf ----
    ("any", 5, OK),
    ("any", "ab", OK),
    ("any", "a", '"a" ' + ANYOF),
    ("any", None, "null " + ANYOF),
    ("any", [1], "[1] " + ANYOF),
    ("one", 1.5, OK),
    ("one", -1, OK),
    ("one", 5, "5 " + ONEOF_MANY),
    ("one", -1.5, "-1.5 " + ONEOF_NONE),
    ("one", "x", '"x" ' + ONEOF_NONE),
    ("all", 4, OK),
    ("all", 0, OK),
    ("all", -3, ["-3 is less than the minimum of 0", "-3 is not a multiple of 2"]),
    ("all", 3.5, ['3.5 is not of type "integer"', "3.5 is not a multiple of 2"]),
    ("all", "x", ['"x" is not of type "integer"']),
    # ---- $ref, nested two levels deep (Input -> Outer -> Inner -> Leaf) ----
    ("deep", {"inner": {"v": 5}}, OK),
    ("deep", {}, OK),
    ("deep", {"inner": {"v": 9}}, [("deep/inner/v", "9 is greater than the maximum of 5")]),
    ("deep", {"inner": {"v": "x"}}, [("deep/inner/v", '"x" is not of type "integer"')]),
    ("deep", {"inner": "x"}, [("deep/inner", '"x" is not of type "object"')]),
    ("deep", 7, '7 is not of type "object"'),
    # ---- self-referencing $ref (Node.kids.items -> Node) ----
    ("tree", {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}, {"v": 4, "kids": []}]}]}, OK),
    ("tree", deep_tree(60), OK),
    ("tree", {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}, {"v": "x"}]}]},
     [("tree/kids/0/kids/1/v", '"x" is not of type "integer"')]),
    ("tree", {"v": 1, "kids": [{"kids": []}]}, [("tree/kids/0/v", REQ)]),
    ("tree", {"v": 1, "kids": [5]}, [("tree/kids/0", '5 is not of type "object"')]),
    # ---- a $ref cycle that enters no instance level (Loop -> allOf -> Loop) terminates ----
    ("loop", "a", OK),
    ("loop", 5, '5 is not of type "string"'),
    # ---- format uri (cog Path / File) ----
    ("img", "https://example.com/a.png", OK),
    ("img", "http://h/x.txt", OK),
    ("img", "data:text/plain;base64,aGk=", OK),
    ("img", "hello", '"hello" is not a "uri"'),
    ("img", "", '"" is not a "uri"'),
    ("img", 3, '3 is not of type "string"'),
    ("files", ["https://a/b.png", "data:,x"], OK),
    ("files", ["https://a/b.png", "nope"], [("files/1", '"nope" is not a "uri"')]),
    # ---- loc is a JSON pointer: `/` -> `~1`, `~` -> `~0` ----
    ("we/ird~", 1, OK),
    ("we/ird~", "x", [("we~1ird~0", '"x" is not of type "integer"')]),
]


def _row_id(row):
    field, value, expected = row
    v = json.dumps(value, ensure_ascii=True)
    v = v if len(v) <= 30 else v[:27] + "..."
    return "%s=%s-%s" % (field, v, "ok" if expected is OK else "422")


@pytest.fixture(scope="module")
def kw_srv(make_module_server):
    s = make_module_server(code=ECHO, files={".cog/openapi_schema.json": KW_SCHEMA})
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.mark.parametrize("row", KEYWORD_ROWS, ids=[_row_id(r) for r in KEYWORD_ROWS])
def test_keyword(kw_srv, row):
    field, value, expected = row
    run_row(kw_srv, {field: value}, expected, default_loc=field)


# rows over the whole input (several fields, stripping, non-object inputs)
INPUT_ROWS = [
    ("empty-object", {}, OK, None),
    ("null-is-empty", None, OK, {}),
    ("several-errors-in-byte-order", {"str": 5, "int": "x", "bool": 1},
     [("bool", '1 is not of type "boolean"'), ("int", '"x" is not of type "integer"'),
      ("str", '5 is not of type "string"')], None),
    ("several-valid", {"str": "a", "int": 1, "len": "héllo", "color": "red", "img": "data:,x"}, OK, None),
    ("strip-unknown-keys", {"str": "a", "zz": 1, "yy": {"q": 2}}, OK, {"str": "a"}),
    ("strip-only-unknown", {"zz": 1}, OK, {}),
    ("strip-then-validate", {"zz": 1, "int": "x"}, [("int", '"x" is not of type "integer"')], None),
    ("strip-keys-of-training-only", {"epochs": 0, "str": "s"}, OK, {"str": "s"}),
    ("root-string", "hello", [("__root__", '"hello" is not of type "object"')], None),
    ("root-array", [1, {"b": 2, "a": 1}], [("__root__", '[1,{"a":1,"b":2}] is not of type "object"')], None),
    ("root-number", 5, [("__root__", '5 is not of type "object"')], None),
    ("root-real", 2.0, [("__root__", '2.0 is not of type "object"')], None),
    ("root-bool", False, [("__root__", 'false is not of type "object"')], None),
]


@pytest.mark.parametrize("name,inp,expected,echo", INPUT_ROWS, ids=[r[0] for r in INPUT_ROWS])
def test_input_rows(kw_srv, name, inp, expected, echo):
    run_row(kw_srv, inp, expected, echo=echo)


def test_422_body_is_exact_compact_sorted_json(kw_srv):
    r = kw_srv.predict({"int": "x"})
    assert r.status_code == 422
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.text == ('{"detail":[{"loc":["body","input","int"],"msg":"\\"x\\" is not of type \\"integer\\"",'
                      '"type":"value_error"}]}')
    kw_srv.wait_log(r"input rejected: .*is not of type")


def test_strip_is_logged_not_reported(kw_srv):
    r = kw_srv.predict({"str": "a", "zz_unknown_key": 1})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["output"]) == {"str": "a"}
    kw_srv.wait_log(r"stripped unknown input fields: .*zz_unknown_key")


def test_put_prediction_is_validated(kw_srv):
    r = kw_srv.put("/predictions/put-invalid-1", {"input": {"min": 0}})
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [entry("min", "0 is less than the minimum of 1")]}
    r = kw_srv.put("/predictions/put-valid-1", {"input": {"min": 2, "zz": 1}})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["output"]) == {"min": 2}


# ---- trainings: TrainingInput is used for /trainings when present ----

TRAINING_ROWS = [
    ("valid", {"epochs": 3}, OK, None),
    ("valid-rate", {"epochs": 1, "rate": 0.5}, OK, None),
    ("input-keys-stripped", {"epochs": 3, "str": "x", "min": 0}, OK, {"epochs": 3}),
    ("missing-required", {}, [("epochs", REQ)], None),
    ("input-field-is-unknown-here", {"str": 5}, [("epochs", REQ)], None),
    ("minimum", {"epochs": 0}, [("epochs", "0 is less than the minimum of 1")], None),
    ("two-errors", {"epochs": "3", "rate": 0},
     [("epochs", '"3" is not of type "integer"'), ("rate", "0 is less than or equal to the minimum of 0")], None),
    ("root", [1], [("__root__", '[1] is not of type "object"')], None),
]


@pytest.mark.parametrize("name,inp,expected,echo", TRAINING_ROWS, ids=[r[0] for r in TRAINING_ROWS])
def test_training_input(kw_srv, name, inp, expected, echo):
    run_row(kw_srv, inp, expected, path="/trainings", echo=echo)


def test_put_training_uses_training_input(kw_srv):
    run_row(kw_srv, {"epochs": 0}, [("epochs", "0 is less than the minimum of 1")],
            path="/trainings/put-train-1", method="put")
    run_row(kw_srv, {"epochs": 2, "int": "x"}, OK, path="/trainings/put-train-2", method="put", echo={"epochs": 2})


# =====================================================================================
# req_srv: required, nullable, null injection, 422 before 409; no TrainingInput
# =====================================================================================

REQ_SCHEMA = openapi(
    Input={
        "title": "Input",
        "type": "object",
        "required": ["b", "a", "c"],  # not in property (byte) order on purpose
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "string"},
            "c": {"type": "boolean"},
            "opt": {"type": "string", "nullable": True},  # injected as null when absent
            "optd": {"type": "string", "nullable": True, "default": "d"},  # has a default: not injected
            "optn": {"type": "integer", "nullable": True, "default": None},  # `default` key present: not injected
            "plain": {"type": "string"},  # not nullable: not injected
            "obj": {"type": "object", "required": ["x", "y"],
                    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}},
            "gate": {"type": "string"},
        },
    },
)
BASE = {"a": 1, "b": "x", "c": True}
ECHOED = dict(BASE, opt=None)

REQUIRED_ROWS = [
    ("all-required-present", BASE, OK, ECHOED),
    ("all-missing-in-required-order", {}, [("b", REQ), ("a", REQ), ("c", REQ)], None),
    ("two-missing", {"c": False}, [("b", REQ), ("a", REQ)], None),
    ("one-missing", {"a": 1, "b": "x"}, [("c", REQ)], None),
    ("missing-then-type-error", {"a": "x"}, [("b", REQ), ("c", REQ), ("a", '"x" is not of type "integer"')], None),
    ("null-is-not-a-value-for-required", {"a": None, "b": "x", "c": True},
     [("a", 'null is not of type "integer"')], None),
    ("nullable-given", dict(BASE, opt="v"), OK, dict(BASE, opt="v")),
    ("nullable-explicit-null-rejected", dict(BASE, opt=None), [("opt", 'null is not of type "string"')], None),
    ("nullable-with-default-not-injected", dict(BASE, optd="q"), OK, dict(BASE, opt=None, optd="q")),
    ("nullable-default-null-not-injected", dict(BASE, optn=3), OK, dict(BASE, opt=None, optn=3)),
    ("plain-optional-not-injected", dict(BASE, plain="p"), OK, dict(BASE, opt=None, plain="p")),
    ("strip-and-inject", dict(BASE, zz=1, opt2=None), OK, ECHOED),
    ("nested-missing-reported-alone", dict(BASE, obj={}), [("obj/x", REQ)], None),
    ("nested-missing-dropped-when-top-misses", {"obj": {}}, [("b", REQ), ("a", REQ), ("c", REQ)], None),
    ("nested-type-error", dict(BASE, obj={"x": 1, "y": "s"}), [("obj/y", '"s" is not of type "integer"')], None),
    ("nested-valid", dict(BASE, obj={"x": 1, "y": 2}), OK, dict(ECHOED, obj={"x": 1, "y": 2})),
    ("root-not-object", "x", [("__root__", '"x" is not of type "object"')], None),
]


@pytest.fixture(scope="module")
def req_srv(make_module_server):
    s = make_module_server(code=ECHO, files={".cog/openapi_schema.json": REQ_SCHEMA})
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.mark.parametrize("name,inp,expected,echo", REQUIRED_ROWS, ids=[r[0] for r in REQUIRED_ROWS])
def test_required_and_nullable(req_srv, name, inp, expected, echo):
    run_row(req_srv, inp, expected, echo=echo)


@pytest.mark.parametrize("name,inp,expected,echo", [
    ("invalid", {}, [("b", REQ), ("a", REQ), ("c", REQ)], None),
    ("valid", dict(BASE, zz=1), OK, ECHOED),
], ids=["invalid", "valid"])
def test_trainings_use_input_without_training_input(req_srv, name, inp, expected, echo):
    run_row(req_srv, inp, expected, path="/trainings", echo=echo)


def wait_file(path, timeout=10):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "predictor never created %s" % path
        time.sleep(0.01)


def test_422_before_409_and_attach_echoes_sanitized_input(req_srv, tmp_path):
    gate = str(tmp_path / "gate")
    r = req_srv.put("/predictions/busy-1", {"input": dict(BASE, gate=gate, zz=1)}, headers=ASYNC)
    assert r.status_code == 202, r.text
    try:
        wait_file(gate + ".started")
        # the single slot is taken: an invalid input still gets its 422 ...
        r = req_srv.predict({"a": "x"})
        assert r.status_code == 422, r.text
        assert r.json() == expected_detail(None, [("b", REQ), ("c", REQ), ("a", '"x" is not of type "integer"')])
        r = req_srv.post("/trainings", {"input": {"c": 1}})
        assert r.status_code == 422, r.text
        assert r.json() == expected_detail(None, [("b", REQ), ("a", REQ), ("c", '1 is not of type "boolean"')])
        # ... and a valid one the 409
        r = req_srv.predict(BASE)
        assert r.status_code == 409, r.text
        assert r.json() == BUSY
        # PUT attach: the stored input is the stripped, null-injected one; the new input is ignored
        r = req_srv.put("/predictions/busy-1", {"input": {"a": "not validated"}})
        assert r.status_code == 202, r.text
        assert r.json()["input"] == dict(ECHOED, gate=gate)
    finally:
        open(gate, "w").close()
    deadline = time.time() + 10 * SLOW
    while True:  # leave the slot free for the other tests
        r = req_srv.predict(BASE)
        if r.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.02)
    assert r.status_code == 200, r.text


def test_no_validator_before_ready_so_503(make_server, tmp_path):
    """Validation precedes the readiness check, but no validator exists before the
    worker is ready: during setup an invalid input gets 503; once READY, 422."""
    gate = str(tmp_path / "setup-gate")
    s = make_server(code=ECHO, files={".cog/openapi_schema.json": REQ_SCHEMA}, env={"SETUP_GATE": gate},
                    ready=False)
    try:
        s.wait_status("STARTING")
        r = s.predict({"a": "x"})
        assert r.status_code == 503, r.text
        assert r.json() == NOT_READY
    finally:
        open(gate, "w").close()
    s.wait_status("READY")
    run_row(s, {"a": "x"}, [("b", REQ), ("c", REQ), ("a", '"x" is not of type "integer"')])
    run_row(s, BASE, OK, echo=ECHOED)


# =====================================================================================
# fifty_srv: 50 fields at once
# =====================================================================================

FIFTY = ["f%02d" % i for i in range(50)]
FIFTY_SCHEMA = openapi(
    Input={
        "title": "Input",
        "type": "object",
        "required": list(reversed(FIFTY)),
        "properties": {
            name: ({"type": "integer", "minimum": 0, "maximum": 100} if i % 2 == 0
                   else {"type": "string", "maxLength": 3})
            for i, name in enumerate(FIFTY)
        },
    },
)


@pytest.fixture(scope="module")
def fifty_srv(make_module_server):
    s = make_module_server(code=ECHO, files={".cog/openapi_schema.json": FIFTY_SCHEMA})
    assert s.health()["status"] == "READY", s.log_text()
    return s


def test_fifty_fields_valid(fifty_srv):
    inp = {name: (i if i % 2 == 0 else "é%d" % (i % 10)) for i, name in enumerate(FIFTY)}
    run_row(fifty_srv, inp, OK)


def test_fifty_fields_all_invalid(fifty_srv):
    inp = {name: (101 if i % 4 == 0 else -1 if i % 2 == 0 else "abcd") for i, name in enumerate(FIFTY)}
    expected = []
    for i, name in enumerate(FIFTY):
        if i % 4 == 0:
            expected.append((name, "101 is greater than the maximum of 100"))
        elif i % 2 == 0:
            expected.append((name, "-1 is less than the minimum of 0"))
        else:
            expected.append((name, '"abcd" is longer than 3 characters'))
    run_row(fifty_srv, inp, expected)


def test_fifty_fields_wrong_types(fifty_srv):
    inp = {name: ("x" if i % 2 == 0 else 1) for i, name in enumerate(FIFTY)}
    expected = [(name, '"x" is not of type "integer"' if i % 2 == 0 else '1 is not of type "string"')
                for i, name in enumerate(FIFTY)]
    run_row(fifty_srv, inp, expected)


def test_fifty_fields_all_missing(fifty_srv):
    run_row(fifty_srv, {}, [(name, REQ) for name in reversed(FIFTY)])


# =====================================================================================
# bad_srv: a pattern that does not compile
# =====================================================================================

BAD_SCHEMA = openapi(
    Input={
        "title": "Input",
        "type": "object",
        "required": ["n"],
        "properties": {"s": {"type": "string", "pattern": "([a-z"}, "n": {"type": "integer"}},
    },
    TrainingInput={"title": "TrainingInput", "type": "object", "properties": {"n": {"type": "integer"}}},
)


@pytest.fixture(scope="module")
def bad_srv(make_module_server):
    return make_module_server(code=ECHO, files={".cog/openapi_schema.json": BAD_SCHEMA})


def test_bad_pattern_server_still_serves(bad_srv):
    assert bad_srv.health()["status"] == "READY", bad_srv.log_text()
    bad_srv.wait_log(r'input schema does not compile; inputs are not validated: invalid pattern \\?"\(\[a-z')
    r = bad_srv.get("/openapi.json")
    assert r.status_code == 200
    assert r.json() == BAD_SCHEMA


@pytest.mark.parametrize("name,inp", [
    ("wrong-types-and-unknown-key", {"s": 5, "n": "x", "zz": 1}),  # not even stripped
    ("missing-required", {}),
    ("non-object", "hello"),
], ids=["wrong-types-and-unknown-key", "missing-required", "non-object"])
def test_bad_pattern_component_not_validated(bad_srv, name, inp):
    r = bad_srv.predict(inp)
    assert r.status_code == 200, r.text
    body = r.json()
    if isinstance(inp, dict):
        assert body["status"] == "succeeded", body
        assert json.loads(body["output"]) == inp
    else:  # reaches the worker, which refuses it: a failed prediction, not a 422
        assert body["status"] == "failed", body
        assert body["error"] == "Input validation error: Input must be a JSON object", body


def test_bad_pattern_other_component_still_validated(bad_srv):
    run_row(bad_srv, {"n": "x"}, [("n", '"x" is not of type "integer"')], path="/trainings")
    run_row(bad_srv, {"n": 1, "s": 5}, OK, path="/trainings", echo={"n": 1})


# =====================================================================================
# gen_srv: no bundle, the schema is generated from the signature
# =====================================================================================

GENERATED = """
from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        image: Path,
        n: int = Input(default=2, ge=1, le=5),
        tag: str = Input(default="a", regex="^[a-z]+$", max_length=3),
    ) -> str:
        with open(image) as f:
            return "%s|%d|%s" % (f.read(), n, tag)
"""

GENERATED_ROWS = [
    ("valid-data-uri", {"image": "data:text/plain;base64,aGk="}, "hi|2|a"),
    ("valid-all", {"image": "data:,yo", "n": 5, "tag": "abc", "zz": 1}, "yo|5|abc"),
    ("missing-path", {}, [("image", REQ)]),
    ("path-not-uri", {"image": "hello"}, [("image", '"hello" is not a "uri"')]),
    ("ge", {"image": "data:,x", "n": 0}, [("n", "0 is less than the minimum of 1")]),
    ("le", {"image": "data:,x", "n": 6}, [("n", "6 is greater than the maximum of 5")]),
    ("max-length", {"image": "data:,x", "tag": "abcd"}, [("tag", '"abcd" is longer than 3 characters')]),
    ("regex", {"image": "data:,x", "tag": "AB"}, [("tag", '"AB" does not match "^[a-z]+$"')]),
]


@pytest.fixture(scope="module")
def gen_srv(make_module_server):
    s = make_module_server(code=GENERATED)
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.mark.parametrize("name,inp,expected", GENERATED_ROWS, ids=[r[0] for r in GENERATED_ROWS])
def test_generated_schema_validation(gen_srv, name, inp, expected):
    r = gen_srv.predict(inp)
    if isinstance(expected, str):
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded", r.text
        assert r.json()["output"] == expected
    else:
        assert r.status_code == 422, r.text
        assert r.json() == expected_detail(None, expected)
