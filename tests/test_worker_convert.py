"""The worker's one Python -> JSON rule, for outputs and metric values alike: NaN and
Infinity are refused with json.dumps(allow_nan=False)'s ValueError (JSON has no token for
them, and the parent's parser accepts none), and lists and dicts nest at most 100 levels
deep; past that a ValueError fails the prediction cleanly, where a deeper value used to reach
the parent as a frame its parser (capped at 128 levels) refused, breaking the slot. Real
server, real worker."""

import pytest

NAN_MESSAGE = "ValueError: Out of range float values are not JSON compliant"
DEPTH_MESSAGE = "ValueError: value nested more than 100 levels deep"

CODE = """
from cog import current_scope


def nested(depth):
    value = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth):
    value = 0
    for _ in range(depth):
        value = {"k": value}
    return value


class Predictor:
    def predict(self, mode: str = "", depth: int = 0) -> object:
        scope = current_scope()
        if mode == "nan_output":
            return {"loss": float("nan")}
        if mode == "inf_item":
            return [1.0, float("inf")]
        if mode == "neg_inf_yield":
            return (x for x in [0.5, float("-inf")])
        if mode == "deep_final":
            return {"top": nested_dict(depth - 1)}
        if mode == "deep_item":
            return [nested(depth)]
        if mode == "deep_tuple_item":
            return [("x", nested(depth - 1))]
        if mode == "self_containing":
            value = []
            value.append(value)
            return value
        if mode == "nan_metric":
            scope.record_metric("loss", float("nan"))
            return "not reached"
        if mode == "nan_metric_caught":
            caught = []
            for value in (float("nan"), {"curve": [1.0, float("inf")]}):
                try:
                    scope.record_metric("loss", value)
                except ValueError as e:
                    caught.append(str(e))
            scope.record_metric("loss", 0.25)
            return caught
        if mode == "nested_metric":
            try:
                scope.record_metric("tree", nested_dict(depth))
                return "recorded"
            except ValueError as e:
                return str(e)
        if mode == "ok":
            return "fine"
        raise ValueError(mode)
"""


@pytest.fixture(scope="module")
def srv(make_module_server):
    server = make_module_server(code=CODE)
    assert server.health()["status"] == "READY", server.log_text()
    return server


def run(srv, **inp):
    r = srv.predict(inp)
    assert r.status_code == 200, r.text
    return r.json()


def assert_failed(body, prefix, message):
    assert body["status"] == "failed", body
    assert body["error"] == prefix + message, body["error"]


def assert_still_serving(srv):
    # the slot survived: a bad value failed one prediction, not the channel
    body = run(srv, mode="ok")
    assert body["status"] == "succeeded" and body["output"] == "fine", body
    assert srv.health()["status"] == "READY"


# ---- NaN and Infinity ----


def test_nan_in_the_final_output_fails_the_prediction(srv):
    body = run(srv, mode="nan_output")
    assert_failed(body, "Prediction failed: Failed to serialize output: ", NAN_MESSAGE)
    assert_still_serving(srv)


def test_infinity_in_a_list_item_fails_the_prediction(srv):
    body = run(srv, mode="inf_item")
    assert_failed(body, "Prediction failed: Failed to serialize output item: ", NAN_MESSAGE)


def test_negative_infinity_yielded_fails_the_prediction(srv):
    body = run(srv, mode="neg_inf_yield")
    assert_failed(body, "Prediction failed: Failed to serialize output item: ", NAN_MESSAGE)


def test_nan_metric_raises_in_user_code(srv):
    body = run(srv, mode="nan_metric")
    assert_failed(body, "Prediction failed: ", NAN_MESSAGE)
    assert "loss" not in body["metrics"], body
    assert_still_serving(srv)


def test_nan_metric_caught_leaves_the_metric_alone(srv):
    body = run(srv, mode="nan_metric_caught")
    assert body["status"] == "succeeded", body
    expected = NAN_MESSAGE.split(": ", 1)[1]
    assert body["output"] == [expected, expected], body
    # neither a null (which would have deleted it) nor a type pinned by the failed calls
    assert body["metrics"]["loss"] == 0.25, body


# ---- depth ----


def depth_of(value):
    """Container levels of a decoded value, and its innermost leaf."""
    levels = 0
    while isinstance(value, (list, dict)):
        value = value[-1] if isinstance(value, list) else next(iter(value.values()))
        levels += 1
    return levels, value


@pytest.mark.parametrize("mode,prefix", [
    ("deep_final", "Prediction failed: Failed to serialize output: "),
    ("deep_item", "Prediction failed: Failed to serialize output item: "),
    ("deep_tuple_item", "Prediction failed: Failed to serialize output item: "),
])
def test_output_nested_100_levels_passes_101_fails(srv, mode, prefix):
    body = run(srv, mode=mode, depth=100)
    assert body["status"] == "succeeded", body.get("error")
    output = body["output"]
    if mode != "deep_final":
        assert len(output) == 1  # the one stream item
        output = output[0]
    assert depth_of(output) == (100, 0 if mode == "deep_final" else "leaf")

    body = run(srv, mode=mode, depth=101)
    assert_failed(body, prefix, DEPTH_MESSAGE)
    assert_still_serving(srv)


def test_output_nested_far_past_the_limit_fails_cleanly(srv):
    # deep enough to overflow a C stack if the converter recursed without a limit
    body = run(srv, mode="deep_final", depth=200000)
    assert_failed(body, "Prediction failed: Failed to serialize output: ", DEPTH_MESSAGE)
    assert_still_serving(srv)


def test_self_containing_output_fails_cleanly(srv):
    body = run(srv, mode="self_containing")
    assert_failed(body, "Prediction failed: Failed to serialize output item: ", DEPTH_MESSAGE)
    assert_still_serving(srv)


def test_metric_nested_past_the_limit_raises(srv):
    body = run(srv, mode="nested_metric", depth=100)
    assert body["status"] == "succeeded" and body["output"] == "recorded", body
    tree, levels = body["metrics"]["tree"], 0
    while isinstance(tree, dict):
        tree, levels = tree["k"], levels + 1
    assert (levels, tree) == (100, 0)

    body = run(srv, mode="nested_metric", depth=101)
    assert body["status"] == "succeeded", body
    assert body["output"] == DEPTH_MESSAGE.split(": ", 1)[1], body
    assert "tree" not in body["metrics"], body
