"""Predictor forms, reference forms, outputs, logs and in-worker failures (docs/predictors.md,
docs/http-api.md#error-strings). A "kitchen" predictor shared by the module covers everything that does not
need a predictor of its own."""

import base64
import json
import os
import shutil

import pytest

from conftest import EXAMPLES

KITCHEN = """
import os
import pathlib
import sys
import tempfile

import cog

STATE = {"calls": 0}
OUT_DIR = tempfile.mkdtemp(prefix="kitchen-out-")


class Predictor:
    def setup(self):
        self.instance_calls = 0

    def predict(self, mode: str = "echo", text: str = ""):
        self.instance_calls += 1
        if mode == "echo":
            return text
        if mode == "count":
            STATE["calls"] += 1
            return [STATE["calls"], self.instance_calls]
        if mode == "dict":
            return {"zebra": 1, "apple": {"y": True, "b": None}, "mango": [3, 2, 1], "Banana": "B"}
        if mode == "list1":
            return ["only"]
        if mode == "list3":
            return ["a", 2, {"c": 3}]
        if mode == "tuple":
            return ("t1", "t2")
        if mode == "emptylist":
            return []
        if mode == "none":
            print("returning nothing")
            return None
        if mode == "int":
            return 42
        if mode == "float":
            return 1.5
        if mode == "bool":
            return False
        if mode == "gen":
            return ("chunk %d" % i for i in range(3))
        if mode == "pathlib":
            p = pathlib.Path(OUT_DIR) / "out.txt"
            p.write_text("hello file")
            return p
        if mode == "cogpath":
            p = os.path.join(OUT_DIR, "cog.json")
            with open(p, "w") as f:
                f.write('{"k": 1}')
            return cog.Path(p)
        if mode == "raise":
            print("about to raise")
            raise ValueError("boom")
        if mode == "raise_empty":
            raise RuntimeError()
        if mode == "exit":
            sys.exit(1)
        if mode == "print":
            print("line one")
            print("line two", file=sys.stderr)
            print("partial", end="")
            return "printed"
        if mode == "fdwrite":
            os.write(1, b"FD-WRITE-MARKER-" + text.encode() + b"\\n")
            os.write(2, b"FD2-WRITE-MARKER-" + text.encode() + b"\\n")
            print("py-print-" + text)
            return "ok"
        if mode == "unicode":
            print("log ✓ 日本語 🎉")
            return {"text": text + " ✓", "emoji": "🎉"}
        raise ValueError("unknown mode " + mode)
"""


@pytest.fixture(scope="module")
def kitchen(make_module_server):
    s = make_module_server(code=KITCHEN)
    assert s.health()["status"] == "READY", s.log_text()
    return s


def run(srv, **inp):
    r = srv.predict(inp)
    assert r.status_code == 200, r.text
    return r.json()


def ok(srv, **inp):
    body = run(srv, **inp)
    assert body["status"] == "succeeded", body
    return body


# ---- failures inside predict ----


def test_exception_fails_prediction(kitchen):
    body = run(kitchen, mode="raise")
    assert body["status"] == "failed"
    assert body["error"] == "Prediction failed: ValueError: boom"
    assert body["error"].count("Prediction failed: ") == 1
    assert body["logs"] == ""
    assert "output" not in body
    assert isinstance(body["metrics"]["predict_time"], float)
    assert set(body) == {"error", "id", "logs", "metrics", "status"}


def test_exception_with_empty_message(kitchen):
    body = run(kitchen, mode="raise_empty")
    assert body["status"] == "failed"
    assert body["error"] == "Prediction failed: RuntimeError: "


def test_next_prediction_after_exception_succeeds(kitchen):
    assert run(kitchen, mode="raise")["status"] == "failed"
    assert ok(kitchen, mode="echo", text="still alive")["output"] == "still alive"


def test_sys_exit_fails_only_that_prediction(kitchen):
    pids_before = kitchen.worker_pids()
    body = run(kitchen, mode="exit")
    assert body["status"] == "failed", body
    assert "SystemExit: 1" in body["error"], body
    assert body["error"].startswith("Prediction failed: "), body
    nxt = ok(kitchen, mode="echo", text="after exit")
    assert nxt["output"] == "after exit"
    assert kitchen.worker_pids() == pids_before
    assert kitchen.health()["status"] == "READY"


def test_unknown_input_key_is_stripped(kitchen):
    """With a schema (generated from the signature when none is bundled) unknown keys are
    stripped at the edge (docs/schema.md#validation-at-the-edge), so they never reach the
    predictor."""
    body = run(kitchen, mode="echo", text="kept", bogus=1)
    assert body["status"] == "succeeded", body
    assert body["output"] == "kept"
    line = kitchen.wait_log(r"stripped unknown input fields")
    assert "bogus" in line


def test_module_state_persists(kitchen):
    first = ok(kitchen, mode="count")["output"]
    second = ok(kitchen, mode="count")["output"]
    third = ok(kitchen, mode="count")["output"]
    assert second[0] == first[0] + 1 and third[0] == first[0] + 2
    # the same instance serves every prediction
    assert second[1] > first[1] and third[1] > second[1]


# ---- outputs ----


def test_dict_output_keys_sorted(kitchen):
    r = kitchen.predict({"mode": "dict"})
    body = r.json()
    assert body["output"] == {"zebra": 1, "apple": {"y": True, "b": None}, "mango": [3, 2, 1], "Banana": "B"}
    assert '"output":{"Banana":"B","apple":{"b":null,"y":true},"mango":[3,2,1],"zebra":1}' in r.text, r.text


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("list1", ["only"]),
        ("list3", ["a", 2, {"c": 3}]),
        ("tuple", ["t1", "t2"]),
        ("emptylist", []),
        ("gen", ["chunk 0", "chunk 1", "chunk 2"]),
        ("int", 42),
        ("float", 1.5),
        ("bool", False),
    ],
)
def test_output_shapes(kitchen, mode, expected):
    body = ok(kitchen, mode=mode)
    assert body["output"] == expected
    assert type(body["output"]) is type(expected)


def test_none_output_is_null(kitchen):
    r = kitchen.predict({"mode": "none"})
    body = r.json()
    assert body["status"] == "succeeded", body
    assert "output" in body
    assert body["output"] is None
    assert '"output":null' in r.text
    assert body["logs"] == "returning nothing\n"


def test_pathlib_output_is_data_url(kitchen):
    body = ok(kitchen, mode="pathlib")
    assert body["output"] == "data:text/plain;base64," + base64.b64encode(b"hello file").decode()


def test_cog_path_output_is_data_url(kitchen):
    body = ok(kitchen, mode="cogpath")
    assert body["output"] == "data:application/json;base64," + base64.b64encode(b'{"k": 1}').decode()


def test_unicode_output_and_logs(kitchen):
    body = ok(kitchen, mode="unicode", text="héllo 日本")
    assert body["output"] == {"emoji": "🎉", "text": "héllo 日本 ✓"}
    assert body["logs"] == "log ✓ 日本語 🎉\n"


# ---- logs ----


def test_print_lands_in_logs(kitchen):
    body = ok(kitchen, mode="print")
    assert body["output"] == "printed"
    # stdout and stderr interleaved, complete lines only
    assert body["logs"].startswith("line one\nline two\n"), body["logs"]


def test_logs_are_per_prediction(kitchen):
    a = ok(kitchen, mode="none")
    b = ok(kitchen, mode="echo", text="quiet")
    assert a["logs"] == "returning nothing\n"
    assert "returning nothing" not in b["logs"]


def test_failed_prediction_logs_empty_even_if_printed(kitchen):
    body = run(kitchen, mode="raise")
    assert body["logs"] == ""
    kitchen.wait_log("about to raise")


def test_fd_writes_not_in_logs_but_in_server_log(kitchen):
    body = ok(kitchen, mode="fdwrite", text="x1")
    assert "py-print-x1\n" in body["logs"]
    assert "FD-WRITE-MARKER" not in body["logs"]
    assert "FD2-WRITE-MARKER" not in body["logs"]
    kitchen.wait_log("FD-WRITE-MARKER-x1")
    kitchen.wait_log("FD2-WRITE-MARKER-x1")


def test_prediction_logs_in_server_log(kitchen):
    body = ok(kitchen, mode="print")
    line = kitchen.wait_log(r'"message":"line one".*"prediction_id":"%s"' % body["id"])
    rec = json.loads(line)
    assert rec["target"] == "coglet::prediction"
    assert rec["fields"]["prediction_id"] == body["id"]


# ---- predictor forms and references ----


def test_plain_class_without_cog_imports(make_server):
    s = make_server(
        code="""
        class Predictor:
            def predict(self, a: int = 1, b: int = 2):
                return {"sum": a + b}
        """
    )
    assert s.health()["status"] == "READY", s.log_text()
    assert ok(s, a=40, b=2)["output"] == {"sum": 42}
    assert ok(s)["output"] == {"sum": 3}


def test_cog_base_predictor_example(make_server, tmp_path):
    shutil.copy(os.path.join(EXAMPLES, "predict.py"), tmp_path / "predict.py")
    s = make_server()
    assert s.health()["status"] == "READY", s.log_text()
    assert "[coglet::setup] setup: greeting loaded" in s.health()["setup"]["logs"]
    body = ok(s)
    assert body["output"] == "Hello, world!"  # Input(default=...) applied
    assert body["logs"] == "greeting 'world' x1\n"
    assert ok(s, text="Ada", repeat=2)["output"] == "Hello, Ada! Hello, Ada!"


def test_cog_base_runner_run(make_server):
    s = make_server(
        code="""
        from cog import BaseRunner, Input

        class Runner(BaseRunner):
            def setup(self) -> None:
                self.prefix = "ran"

            def run(self, word: str = Input(default="x")) -> str:
                return self.prefix + ":" + word
        """,
        ref="predict.py:Runner",
    )
    assert s.health()["status"] == "READY", s.log_text()
    assert ok(s, word="go")["output"] == "ran:go"
    assert ok(s)["output"] == "ran:x"


def test_standalone_function(make_server):
    s = make_server(
        code="""
        def run(x: int) -> int:
            return x * 2
        """,
        ref="predict.py:run",
    )
    assert s.health()["status"] == "READY", s.log_text()
    assert ok(s, x=21)["output"] == 42
    # the schema generated from the signature makes x required: a 422 at the edge
    r = s.predict({})
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [{"loc": ["body", "input", "x"], "msg": "Field required",
                                    "type": "value_error.missing"}]}


def test_generator_predictor(make_server):
    s = make_server(
        code="""
        from typing import Iterator
        from cog import BasePredictor

        class Predictor(BasePredictor):
            def predict(self, n: int = 3) -> Iterator[str]:
                for i in range(n):
                    print("yielding", i)
                    yield f"chunk {i}"
        """
    )
    body = ok(s)
    assert body["output"] == ["chunk 0", "chunk 1", "chunk 2"]
    assert body["logs"] == "yielding 0\nyielding 1\nyielding 2\n"
    assert ok(s, n=1)["output"] == ["chunk 0"]
    assert ok(s, n=0)["output"] == []


def test_ref_file_only_finds_runner(make_server):
    s = make_server(
        code="""
        class Predictor:
            def predict(self) -> str:
                return "predictor"

        class Runner:
            def run(self) -> str:
                return "runner"
        """,
        ref="predict.py",
    )
    assert s.health()["status"] == "READY", s.log_text()
    assert ok(s)["output"] == "runner"


def test_ref_file_only_finds_predictor(make_server):
    s = make_server(
        code="""
        class Predictor:
            def predict(self) -> str:
                return "predictor"
        """,
        ref="predict.py",
    )
    assert s.health()["status"] == "READY", s.log_text()
    assert ok(s)["output"] == "predictor"


def test_ref_named_class(make_server):
    s = make_server(
        code="""
        class Predictor:
            def predict(self) -> str:
                return "wrong one"

        class MyModel:
            def predict(self) -> str:
                return "my model"
        """,
        ref="predict.py:MyModel",
    )
    assert s.health()["status"] == "READY", s.log_text()
    assert ok(s)["output"] == "my model"


def test_ref_other_file(make_server):
    s = make_server(
        files={
            "models/thing.py": """
            class Thing:
                def predict(self, v: str = "v") -> str:
                    return "thing:" + v
            """
        },
        ref="models/thing.py:Thing",
    )
    assert s.health()["status"] == "READY", s.log_text()
    assert ok(s, v="w")["output"] == "thing:w"
