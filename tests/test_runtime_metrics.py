"""Runtime fidelity, metrics and context (docs/python-api.md#metricrecorder,
docs/http-api.md#metrics): record_metric through
BaseRunner, current_scope() and the recorder, modes replace/incr/append, dot paths merged into
nested objects next to predict_time, name and type errors failing the prediction with the
documented messages, the request context, and current_scope() outside a prediction (a no-op scope, never
None). Real server, real worker, real cog SDK."""

import json
import os

import pytest

from conftest import EXAMPLES
from receivers import make_receiver  # noqa: F401 (fixture)

RUNNER = """
import asyncio
import threading

from cog import BaseRunner, current_scope
from coglet import _sdk

SETUP_SCOPE = {}


class Runner(BaseRunner):
    def setup(self):
        scope = current_scope()
        SETUP_SCOPE["is_none"] = scope is None
        SETUP_SCOPE["repr"] = repr(scope)
        SETUP_SCOPE["type"] = type(scope).__name__
        SETUP_SCOPE["context"] = dict(scope.context)
        # all of these are silently ignored outside a prediction
        scope.record_metric("setup_metric", 1)
        self.record_metric("setup_metric_2", 2, mode="incr")
        scope.metrics["x"] = 1
        del scope.metrics["x"]
        try:
            scope.record_metric("k", 1, mode="bogus")
            SETUP_SCOPE["bad_mode"] = "accepted"
        except TypeError as e:
            SETUP_SCOPE["bad_mode"] = str(e)
        self.kept = None

    def run(self, mode: str = "modes", name: str = "", value: str = "") -> object:
        scope = current_scope()
        if mode == "modes":
            self.record_metric("temperature", 0.5)
            self.record_metric("temperature", 0.7)                  # replace
            self.record_metric("token_count", 1, mode="incr")
            self.record_metric("token_count", 2, mode="incr")       # 3
            scope.record_metric("latency", 0.25, mode="increment")
            scope.record_metric("latency", 1.0, mode="incr")        # float + float
            self.record_metric("cache", "fast", mode="append")
            scope.metrics.record("cache", "cached", mode="append")
            self.record_metric("timing.preprocess", 0.1)
            self.record_metric("timing.inference", 1.5)
            self.record_metric("a.b.c.d", True)                     # 4 segments
            scope.metrics["gone"] = 5
            del scope.metrics["gone"]
            scope.metrics["also_gone"] = "x"
            scope.metrics["also_gone"] = None                      # None deletes
            scope.metrics["dict_val"] = {"k": [1, "two", None]}
            t = threading.Thread(target=lambda: current_scope().record_metric("from_thread", 1, mode="incr"))
            t.start()
            t.join()
            return repr(scope)
        if mode == "record":
            self.record_metric(name, 1)
            return "recorded"
        if mode == "record_then_fail":
            self.record_metric("before_failure", 42)
            raise RuntimeError("after the metric")
        if mode == "bad_mode":
            self.record_metric("k", 1, mode=value)
        if mode == "type_change":
            self.record_metric("k", 1)
            self.record_metric("k", "one")
        if mode == "bad_value":
            self.record_metric("k", object())
        if mode == "incr_str":
            self.record_metric("k", "x", mode="incr")
        if mode == "delete_then_retype":
            self.record_metric("k", 1)
            del scope.metrics["k"]
            self.record_metric("k", "now a string")
            return "ok"
        if mode == "context":
            return {"context": dict(scope.context), "same": scope.context is current_scope().context,
                    "runner_scope": self.scope.context == scope.context}
        if mode == "setup_scope":
            return SETUP_SCOPE
        if mode == "keep":
            self.kept = scope
            scope.record_metric("kept", 1)
            return "kept"
        if mode == "use_kept":
            # a scope kept from an earlier prediction is inactive: no effect here
            self.kept.record_metric("kept", 100)
            self.kept.record_metric("stale", 1)
            return repr(self.kept)
        raise ValueError(mode)
"""

ASYNC = """
import asyncio

from cog import current_scope


class Predictor:
    async def predict(self, n: int = 3) -> dict:
        async def step(k):
            await asyncio.sleep(0.001 * k)
            current_scope().record_metric("steps", 1, mode="incr")
            current_scope().record_metric("order", k, mode="append")
            return dict(current_scope().context)

        contexts = await asyncio.gather(*(step(k) for k in range(n)))
        await asyncio.to_thread(lambda: current_scope().record_metric("to_thread", True))
        return {"contexts": contexts}
"""


@pytest.fixture(scope="module")
def runner(make_module_server):
    srv = make_module_server(code=RUNNER, ref="predict.py:Runner")
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


def predict(srv, inp, **kw):
    r = srv.post("/predictions", dict({"input": inp}, **kw))
    assert r.status_code == 200, r.text
    return r.json()


def user_metrics(body):
    m = dict(body["metrics"])
    assert isinstance(m.pop("predict_time"), float), body
    return m


def test_modes_and_dot_paths_merge(runner):
    r = runner.post("/predictions", {"input": {"mode": "modes"}})
    body = r.json()
    assert body["status"] == "succeeded", body
    assert user_metrics(body) == {
        "temperature": 0.7,
        "token_count": 3,
        "latency": 1.25,
        "cache": ["fast", "cached"],
        "timing": {"preprocess": 0.1, "inference": 1.5},
        "a": {"b": {"c": {"d": True}}},
        "dict_val": {"k": [1, "two", None]},
        "from_thread": 1,
    }
    assert type(user_metrics(body)["token_count"]) is int
    # metrics keys are sorted like every map-built object, predict_time among them
    raw = r.text[r.text.index('"metrics":'):]
    assert raw.startswith('"metrics":{"a":{"b":{"c":{"d":true}}},"cache":["fast","cached"],"dict_val":')
    assert '"timing":{"inference":1.5,"preprocess":0.1},"token_count":3}' in raw
    assert body["output"].startswith("Scope(MetricRecorder(keys=")


def test_metrics_are_per_prediction(runner):
    a = predict(runner, {"mode": "modes"})
    b = predict(runner, {"mode": "context"})
    assert user_metrics(a)["token_count"] == 3  # not 6: a fresh recorder each time
    assert user_metrics(b) == {}


NAME_ERRORS = [
    ("predict_time", "'predict_time' is reserved by the runtime"),
    ("cog.x", "the 'cog.' prefix is reserved for system metrics"),
    ("", "metric name must not be empty"),
    ("a" * 129, "metric name must be 128 characters or fewer (got 129 characters)"),
    ("a.b.c.d.e", "metric name must have at most 4 dot-separated segments (got 5)"),
    (".foo", "metric name must not start with a dot"),
    ("foo.", "metric name must not end with a dot"),
    ("foo..bar", "metric name must not contain empty segments (consecutive dots)"),
    ("_foo", "metric name segment '_foo' must start with a letter"),
    ("123bar", "metric name segment '123bar' must start with a letter"),
    ("foo__bar", "metric name segment 'foo__bar' must not contain consecutive underscores"),
    ("foo-bar", "metric name segment 'foo-bar' contains invalid character '-'"),
    ("foo bar", "metric name segment 'foo bar' contains invalid character ' '"),
    ("foo_", "metric name segment 'foo_' must end with a letter or digit"),
]


@pytest.mark.parametrize("name,message", NAME_ERRORS, ids=[n[:12] or "empty" for n, _ in NAME_ERRORS])
def test_invalid_metric_name_fails_prediction(runner, name, message):
    body = predict(runner, {"mode": "record", "name": name})
    assert body["status"] == "failed", body
    assert body["error"] == "Prediction failed: ValueError: " + message


@pytest.mark.parametrize("name", ["temperature", "TTFT", "T2I_latency", "x", "timing.preprocess", "a.b.c.d",
                                  "cognitive", "a" * 128])
def test_valid_metric_names(runner, name):
    body = predict(runner, {"mode": "record", "name": name})
    assert body["status"] == "succeeded", body
    metrics = user_metrics(body)
    node = metrics
    for part in name.split("."):
        node = node[part]
    assert node == 1


@pytest.mark.parametrize("mode,value,error", [
    ("bad_mode", "bogus",
     "TypeError: Invalid metric mode: 'bogus'. Expected 'replace', 'incr', or 'append'."),
    ("type_change", "", "TypeError: Metric 'k' has type int, cannot set to str without deleting first"),
    ("bad_value", "",
     "TypeError: Unsupported metric value type: object. Expected bool, int, float, str, list, or dict."),
    ("incr_str", "", "TypeError: Increment mode requires int or float, got str"),
])
def test_metric_type_errors_fail_prediction(runner, mode, value, error):
    body = predict(runner, {"mode": mode, "value": value})
    assert body["status"] == "failed", body
    assert body["error"] == "Prediction failed: " + error


def test_delete_forgets_the_type(runner):
    body = predict(runner, {"mode": "delete_then_retype"})
    assert body["status"] == "succeeded", body
    assert user_metrics(body) == {"k": "now a string"}


def test_failed_prediction_keeps_its_metrics(runner):
    body = predict(runner, {"mode": "record_then_fail"})
    assert body["status"] == "failed"
    assert body["error"] == "Prediction failed: RuntimeError: after the metric"
    assert user_metrics(body) == {"before_failure": 42}


def test_context_echoes_the_request(runner):
    body = predict(runner, {"mode": "context"}, context={"user": "ada", "trace": "t-1", "empty": ""})
    assert body["output"] == {"context": {"user": "ada", "trace": "t-1", "empty": ""}, "same": True,
                              "runner_scope": True}
    body = predict(runner, {"mode": "context"})
    assert body["output"]["context"] == {}


def test_current_scope_in_setup_is_a_noop_scope(runner):
    body = predict(runner, {"mode": "setup_scope"})
    assert body["output"] == {
        "is_none": False,
        "repr": "Scope(MetricRecorder(inactive))",
        "type": "Scope",
        "context": {},
        "bad_mode": "Invalid metric mode: 'bogus'. Expected 'replace', 'incr', or 'append'.",
    }
    # nothing recorded during setup leaks into a prediction
    assert user_metrics(body) == {}


def test_scope_kept_after_its_prediction_is_inactive(runner):
    first = predict(runner, {"mode": "keep"})
    assert user_metrics(first) == {"kept": 1}
    second = predict(runner, {"mode": "use_kept"})
    assert second["status"] == "succeeded", second
    assert second["output"] == "Scope(MetricRecorder(inactive))"
    assert user_metrics(second) == {}


def test_async_tasks_record_into_their_prediction(make_server):
    srv = make_server(code=ASYNC)
    assert srv.health()["status"] == "READY", srv.log_text()
    body = predict(srv, {"n": 4}, context={"req": "r1"})
    assert body["status"] == "succeeded", body
    assert body["output"] == {"contexts": [{"req": "r1"}] * 4}
    m = user_metrics(body)
    assert m["steps"] == 4 and m["to_thread"] is True
    assert sorted(m["order"]) == [0, 1, 2, 3]


def test_metrics_in_the_completed_webhook(runner, make_receiver):
    rx = make_receiver()
    r = runner.post("/predictions", {"id": "metrics-wh", "input": {"mode": "modes"}, "webhook": rx.url,
                                     "webhook_events_filter": ["completed"]}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    final = rx.wait_terminal("metrics-wh", timeout=15)
    assert final["status"] == "succeeded", final
    m = user_metrics(final)
    assert m["token_count"] == 3 and m["cache"] == ["fast", "cached"]
    assert m["timing"] == {"preprocess": 0.1, "inference": 1.5}


def test_example_metrics(make_server):
    with open(os.path.join(EXAMPLES, "metrics.py")) as f:
        code = f.read()
    srv = make_server(code=code, ref="predict.py:Runner")
    assert srv.health()["status"] == "READY", srv.log_text()
    body = predict(srv, {"prompt": "a small red fox"}, context={"user": "ada"})
    assert body["status"] == "succeeded", body
    assert body["output"] == "fox red small a (for ada)"
    m = user_metrics(body)
    assert m["temperature"] == 0.7 and m["token_count"] == 4 and m["cache"] == ["miss"]
    assert set(m["timing"]) == {"preprocess"} and isinstance(m["timing"]["preprocess"], (int, float))
    assert "ignored" not in m
    assert predict(srv, {})["output"] == "cat a (for anonymous)"
    json.dumps(body)  # plain JSON all the way
