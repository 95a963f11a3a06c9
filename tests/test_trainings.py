"""Trainings (docs/http-api.md#trainings): the /trainings routes behave like /predictions (shared
registry, PUT attach, cancel); the server mode, not the route, picks the method:
`--train` runs train() for every request."""

import os
import re
import threading
import time
import uuid

import pytest

from conftest import HOLD, SLOW
from receivers import make_receiver  # noqa: F401 (fixture)

PREDICTOR = HOLD + """

class Predictor:
    def predict(self, text: str = "x", gate: str = "", started: str = ""):
        hold(gate, started)
        return "predict:" + text

    def train(self, text: str = "x", gate: str = "", started: str = ""):
        hold(gate, started)
        return "train:" + text
"""

ASYNC = {"Prefer": "respond-async"}
TRAIN_MISMATCH = (
    '{"detail":[{"loc":["body","id"],"msg":"training ID must match the ID supplied in the URL",'
    '"type":"value_error"}]}'
)


@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server(code=PREDICTOR)
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.fixture(scope="module")
def train_srv(make_module_server):
    s = make_module_server(code=PREDICTOR, args=["--train"])
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.fixture
def gate(tmp_path):
    tag = uuid.uuid4().hex
    return str(tmp_path / ("gate-" + tag)), str(tmp_path / ("started-" + tag))


def wait_file(path, timeout=10):
    deadline = time.time() + timeout * SLOW
    while not os.path.exists(path):
        assert time.time() < deadline, "predictor never created %s" % path
        time.sleep(0.01)


# ---- predict mode ----


def test_post_trainings_runs_predict_in_predict_mode(srv):
    r = srv.post("/trainings", {"input": {"text": "hi"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded"
    assert body["output"] == "predict:hi"
    assert re.fullmatch(r"pred_[0-9a-f]+", body["id"]), body
    assert "predict_time" in body["metrics"]


def test_post_trainings_async(srv, make_receiver):
    rx = make_receiver()
    r = srv.post("/trainings", {"input": {"text": "a"}, "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202
    body = r.json()
    assert set(body) == {"id", "status"} and body["status"] == "starting"
    assert re.fullmatch(r"pred_[0-9a-f]+", body["id"]), body
    done = rx.wait_terminal(body["id"])
    assert done["status"] == "succeeded" and done["output"] == "predict:a"
    srv.wait_status("READY")


def test_put_trainings_id_mismatch(srv):
    r = srv.put("/trainings/t1", {"id": "t2", "input": {}})
    assert r.status_code == 422
    assert r.text == TRAIN_MISMATCH


def test_put_trainings_creates_and_attaches(srv, gate, make_receiver):
    g, started = gate
    rx = make_receiver()
    r = srv.put("/trainings/train-put-1", {"input": {"text": "p", "gate": g, "started": started},
                                           "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202, r.text
    assert r.json() == {"id": "train-put-1", "status": "starting"}
    wait_file(started)
    for headers in ({}, ASYNC):
        r = srv.put("/trainings/train-put-1", {"input": {"text": "other"}}, headers=headers)
        assert r.status_code == 202, r.text
        state = r.json()
        assert state["status"] == "processing"
        assert state["input"] == {"text": "p", "gate": g, "started": started}
    # the registry is shared: the prediction routes see the training
    r = srv.put("/predictions/train-put-1", {})
    assert r.status_code == 202 and r.json()["id"] == "train-put-1"
    open(g, "w").close()
    done = rx.wait_terminal("train-put-1")
    assert done["output"] == "predict:p"
    assert len(rx.terminal("train-put-1")) == 1
    srv.wait_status("READY")
    # finished: PUT starts a new one
    r = srv.put("/trainings/train-put-1", {"input": {"text": "again"}})
    assert r.status_code == 200 and r.json()["output"] == "predict:again"


def test_trainings_cancel(srv, gate, make_receiver):
    g, started = gate
    rx = make_receiver()
    r = srv.post("/trainings", {"id": "train-cancel", "input": {"gate": g, "started": started}, "webhook": rx.url},
                 headers=ASYNC)
    assert r.status_code == 202
    wait_file(started)
    r = srv.post("/trainings/train-cancel/cancel")
    assert (r.status_code, r.text) == (200, "{}")
    assert srv.post("/trainings/train-cancel/cancel").status_code in (200, 404)
    done = rx.wait_terminal("train-cancel", timeout=10)
    assert done["status"] == "canceled", done
    srv.wait_status("READY")
    r = srv.post("/trainings/train-cancel/cancel")
    assert (r.status_code, r.text) == (404, "{}")


def test_prediction_cancelled_through_trainings_route(srv, gate):
    g, started = gate
    out = {}

    def run():
        out["r"] = srv.post("/predictions", {"id": "pred-via-train", "input": {"gate": g, "started": started}})

    t = threading.Thread(target=run)
    t.start()
    wait_file(started)
    assert srv.post("/trainings/pred-via-train/cancel").status_code == 200
    t.join(15 * SLOW)
    assert out["r"].json()["status"] == "canceled"


def test_training_at_capacity_409(srv, gate):
    g, started = gate
    r = srv.post("/trainings", {"input": {"gate": g, "started": started}}, headers=ASYNC)
    assert r.status_code == 202
    wait_file(started)
    r = srv.post("/trainings", {"input": {}})
    assert r.status_code == 409
    assert r.json() == {"error": "At capacity - all prediction slots busy", "status": "failed"}
    open(g, "w").close()
    srv.wait_status("READY")


def test_trainings_sse_406_without_schema(srv):
    r = srv.post("/trainings", {"input": {}}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 406
    assert r.json() == {"error": "Training endpoints do not support streaming responses."}
    r = srv.put("/trainings/sse-x", {"input": {}}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 406
    assert r.json() == {"error": "Training endpoints do not support streaming responses."}


# ---- train mode ----


@pytest.mark.parametrize("method, path", [("post", "/predictions"), ("post", "/trainings"),
                                          ("put", "/trainings/tm-put"), ("put", "/predictions/tm-put2")])
def test_train_mode_runs_train_on_every_route(train_srv, method, path):
    r = getattr(train_srv, method)(path, {"input": {"text": "t"}})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["output"] == "train:t"


def test_train_mode_async_and_cancel(train_srv, gate, make_receiver):
    g, started = gate
    rx = make_receiver()
    r = train_srv.post("/trainings", {"id": "tm-cancel", "input": {"gate": g, "started": started},
                                      "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202
    wait_file(started)
    assert train_srv.post("/predictions/tm-cancel/cancel").status_code == 200
    assert rx.wait_terminal("tm-cancel")["status"] == "canceled"
    train_srv.wait_status("READY")
    r = train_srv.post("/trainings", {"input": {"text": "z"}, "webhook": rx.url}, headers=ASYNC)
    assert rx.wait_terminal(r.json()["id"])["output"] == "train:z"


def test_train_mode_logged(train_srv):
    line = train_srv.wait_log(r'"Server ready"')
    assert '"mode":"train"' in line, line


# ---- TrainingInput ----


SCHEMA = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "paths": {},
    "components": {
        "schemas": {
            "Input": {"title": "Input", "type": "object",
                      "properties": {"text": {"title": "Text", "type": "string", "x-order": 0}},
                      "required": ["text"]},
            "TrainingInput": {"title": "TrainingInput", "type": "object",
                              "properties": {"text": {"title": "Text", "type": "string", "x-order": 0},
                                             "gate": {"title": "Gate", "type": "string", "default": "",
                                                      "x-order": 1}}},
            "Output": {"title": "Output", "type": "string"},
            "TrainingOutput": {"title": "TrainingOutput", "type": "string"},
        }
    },
}


def test_training_input_schema(make_server):
    s = make_server(code=PREDICTOR, files={".cog/openapi_schema.json": SCHEMA})
    # /predictions validates against Input: text is required
    r = s.post("/predictions", {"input": {}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "input", "text"]
    # /trainings validates against TrainingInput: text optional there
    r = s.post("/trainings", {"input": {}})
    assert r.status_code == 200, r.text
    assert r.json()["output"] == "predict:x"
    r = s.post("/trainings", {"input": {"text": 5}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "input", "text"]
    # GET / advertises the training routes
    root = s.get("/").json()
    assert root["trainings_url"] == "/trainings"
    assert root["trainings_idempotent_url"] == "/trainings/{training_id}"
    assert root["trainings_cancel_url"] == "/trainings/{training_id}/cancel"
