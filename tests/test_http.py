"""The HTTP surface (docs/http-api.md): every route, the framework errors, and the
HTTP/1.1 mechanics (keep-alive, pipelining, chunked bodies, Expect: 100-continue, HEAD).

One server (an echo predictor) is shared by the module; tests that need a schema file or
stop the server start their own."""

import json
import re
import sys
import threading

import pytest
import requests

import coglet
from conftest import SLOW, RawConn, raw_request

ECHO = """
import os
import time


class Predictor:
    def setup(self):
        print("http-suite setup says hi")

    def predict(self, text: str = "default-text", wait_for: str = ""):
        deadline = time.time() + 120
        while wait_for and not os.path.exists(wait_for) and time.time() < deadline:
            time.sleep(0.01)
        return text
"""

ROOT_KEYS = {
    "cog_version",
    "docs_url",
    "healthcheck_url",
    "openapi_url",
    "predictions_cancel_url",
    "predictions_idempotent_url",
    "predictions_url",
    "shutdown_url",
}
NOT_READY = (
    '{"error":"Setup has not finished yet. Wait until it has finished, or GET /health-check for status.",'
    '"status":"failed"}'
)
UNSUPPORTED_MEDIA = "Expected request with `Content-Type: application/json`"
TOO_LARGE = "Failed to buffer the request body: length limit exceeded"
PUT_MISMATCH = (
    '{"detail":[{"loc":["body","id"],"msg":"prediction ID must match the ID supplied in the URL",'
    '"type":"value_error"}]}'
)


@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server(code=ECHO)
    assert s.health()["status"] == "READY", s.log_text()
    return s


def post_raw(srv, path, data, content_type="application/json", **kw):
    headers = kw.pop("headers", {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(srv.url + path, data=data, headers=headers, timeout=30 * SLOW, **kw)


def is_text_plain(r):
    return r.headers.get("Content-Type", "").split(";")[0].strip() == "text/plain"


# ---- GET / ----


def test_root_lists_the_eight_keys(srv):
    r = srv.get("/")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == ROOT_KEYS
    assert body == {
        "cog_version": "0.23.1",  # the cog SDK's version wins over coglet's
        "docs_url": "/docs",
        "healthcheck_url": "/health-check",
        "openapi_url": "/openapi.json",
        "predictions_cancel_url": "/predictions/{prediction_id}/cancel",
        "predictions_idempotent_url": "/predictions/{prediction_id}",
        "predictions_url": "/predictions",
        "shutdown_url": "/shutdown",
    }


def test_root_keys_sorted_compact(srv):
    text = srv.get("/").text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


# ---- GET /health-check ----


def test_health_check_ready(srv):
    r = srv.get("/health-check")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert list(body)[:3] == ["status", "setup", "version"]
    assert body["status"] == "READY"
    setup = body["setup"]
    assert setup["status"] == "succeeded"
    rfc3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00$"
    assert re.match(rfc3339, setup["started_at"]), setup
    assert re.match(rfc3339, setup["completed_at"]), setup
    assert setup["completed_at"] >= setup["started_at"]


def test_health_check_setup_logs(srv):
    logs = srv.health()["setup"]["logs"]
    assert "Server ready" in logs
    assert "[coglet::setup] http-suite setup says hi\n" in logs
    assert "Setup complete, now accepting requests" not in logs
    assert "Starting coglet server on 127.0.0.1:%d" % srv.port in logs
    assert logs.endswith("\n")


def test_health_check_version(srv):
    version = srv.health()["version"]
    assert version["coglet"] == coglet.__version__
    assert version["python_sdk"] == "0.23.1"
    assert version["python"] == sys.version.split()[0]
    assert "cog" not in version
    assert list(version)[0] == "coglet"


# ---- GET /openapi.json ----


def test_openapi_without_bundle_is_generated(srv):
    """No .cog/openapi_schema.json: the worker generates one from the signature (the
    Rust coglet answers 503 here)."""
    r = srv.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"] == "3.0.2"
    assert doc["components"]["schemas"]["Input"]["type"] == "object"


def test_openapi_health_only_is_503(tmp_path):
    """Without a predictor there is no schema at all."""
    from conftest import Server

    srv = Server(tmp_path, [], launcher=[sys.executable, "-c",
                                         "import coglet; coglet.server.serve(None, '127.0.0.1', 0)"])
    try:
        r = srv.get("/openapi.json")
        assert r.status_code == 503
        assert r.text == '{"error":"OpenAPI schema not available"}'
        assert r.headers["Content-Type"].startswith("application/json")
        assert srv.health()["status"] == "UNKNOWN"
    finally:
        srv.stop()


SCHEMA = {
    "openapi": "3.0.2",
    "info": {"version": "0.1.0", "title": "Cog"},
    "paths": {"/predictions": {"post": {"summary": "Predict", "description": "Run a prediction"}}},
    "components": {"schemas": {"Output": {"type": "string", "title": "Output"}}},
    "zzz_last": [3, 2, 1],
    "aaa_first": {"b": 1, "a": 2},
}


def test_openapi_with_schema_file(make_server):
    s = make_server(code=ECHO, files={".cog/openapi_schema.json": SCHEMA})
    assert s.health()["status"] == "READY", s.log_text()
    r = s.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == SCHEMA
    # re-serialized compact with keys sorted at every level
    assert r.text == json.dumps(SCHEMA, sort_keys=True, separators=(",", ":"))
    # and predictions still work with that (Input-less) schema
    body = s.predict({"text": "with schema"}).json()
    assert body["status"] == "succeeded", body
    assert body["output"] == "with schema"


# ---- POST /predictions (sync) ----


def test_predict_sync_success_shape(srv):
    r = srv.predict({"text": "hello"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"id", "logs", "metrics", "output", "status"}, body
    assert body["status"] == "succeeded"
    assert body["output"] == "hello"
    assert body["logs"] == ""
    assert isinstance(body["metrics"]["predict_time"], float)
    assert body["metrics"]["predict_time"] >= 0
    # map-built object: sorted keys, compact
    assert r.text == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_generated_id_format(srv):
    ids = set()
    for _ in range(3):
        body = srv.predict({"text": "x"}).json()
        assert re.match(r"^pred_[0-9a-f]+$", body["id"]), body["id"]
        ids.add(body["id"])
    assert len(ids) == 3


def test_client_id_used_verbatim(srv):
    body = srv.post("/predictions", {"id": "my-pred-123", "input": {"text": "x"}}).json()
    assert body["id"] == "my-pred-123"
    assert body["status"] == "succeeded"


def test_unicode_round_trip(srv):
    text = "héllo wörld — 日本語 ✓ 🎉🚀 \u00e9\U0001F600"
    r = srv.predict({"text": text})
    assert r.status_code == 200
    body = json.loads(r.content.decode("utf-8"))
    assert body["status"] == "succeeded", body
    assert body["output"] == text


def test_unicode_raw_utf8_body(srv):
    text = "naïve café 🎉"
    data = json.dumps({"input": {"text": text}}, ensure_ascii=False).encode("utf-8")
    r = post_raw(srv, "/predictions", data, content_type="application/json; charset=utf-8")
    assert r.status_code == 200
    assert r.json()["output"] == text


def test_input_null_and_missing_are_empty(srv):
    for body in ({}, {"input": None}, {"input": {}}):
        out = srv.post("/predictions", body).json()
        assert out["status"] == "succeeded", (body, out)
        assert out["output"] == "default-text", (body, out)


def test_unknown_top_level_fields_ignored(srv):
    body = srv.post(
        "/predictions",
        {"input": {"text": "t"}, "created_at": "2020-01-01T00:00:00Z", "version": "abc", "output_file_prefix": None},
    ).json()
    assert body["status"] == "succeeded", body
    assert body["output"] == "t"


def test_no_content_type_body_ignored(srv):
    data = json.dumps({"input": {"text": "should be ignored"}}).encode()
    r = post_raw(srv, "/predictions", data, content_type=None)
    assert "Content-Type" not in r.request.headers
    assert r.status_code == 200
    assert r.json()["status"] == "succeeded"
    assert r.json()["output"] == "default-text"


def test_no_content_type_garbage_body_ignored(srv):
    r = post_raw(srv, "/predictions", b"this is { not json", content_type=None)
    assert r.status_code == 200
    assert r.json()["output"] == "default-text"


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "application/vnd.api+json"])
def test_json_content_types_accepted(srv, ctype):
    r = post_raw(srv, "/predictions", b'{"input":{"text":"ct"}}', content_type=ctype)
    assert r.status_code == 200, r.text
    assert r.json()["output"] == "ct"


# ---- PUT /predictions/{id} ----


def test_put_creates_prediction_with_path_id(srv):
    r = srv.put("/predictions/put-id-1", {"input": {"text": "via put"}})
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "put-id-1"
    assert body["output"] == "via put"


def test_put_finished_id_starts_new_prediction(srv):
    a = srv.put("/predictions/put-again", {"input": {"text": "one"}}).json()
    b = srv.put("/predictions/put-again", {"input": {"text": "two"}}).json()
    assert (a["output"], b["output"]) == ("one", "two")


def test_put_matching_body_id(srv):
    r = srv.put("/predictions/same-id", {"id": "same-id", "input": {"text": "m"}})
    assert r.status_code == 200
    assert r.json()["id"] == "same-id"


def test_put_id_mismatch_422(srv):
    r = srv.put("/predictions/abc", {"id": "xyz", "input": {"text": "x"}})
    assert r.status_code == 422
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == json.loads(PUT_MISMATCH)
    assert r.text == PUT_MISMATCH


def test_put_percent_decoded_id(srv):
    body = srv.put("/predictions/a%20b", {"input": {"text": "pct"}}).json()
    assert body["id"] == "a b"


# ---- POST /shutdown ----


def test_shutdown_endpoint(make_server):
    s = make_server(code=ECHO)
    r = s.post("/shutdown")
    assert r.status_code == 200
    assert r.json() == {}
    assert s.proc.wait(timeout=20 * SLOW) == 0
    s.wait_log("Shutdown requested via /shutdown endpoint")
    s.wait_log("Server shutdown complete")


# ---- HEAD ----


@pytest.mark.parametrize("path", ["/", "/health-check", "/openapi.json"])
def test_head_like_get(srv, path):
    get = srv.get(path)
    with RawConn(srv.port) as c:
        c.send(raw_request("HEAD", path))
        head = c.read_response(head_request=True)
        assert head.status == get.status_code
        if "content-length" in head.headers and path == "/":
            assert int(head.headers["content-length"]) == len(get.content)
        # no body was sent: the next response on the connection starts right away
        c.send(raw_request("GET", "/"))
        nxt = c.read_response()
        assert nxt.status == 200, nxt
        assert set(nxt.json()) == ROOT_KEYS


def test_head_unknown_path_404(srv):
    assert requests.head(srv.url + "/nope", timeout=10 * SLOW).status_code == 404


# ---- 404 / 405 ----


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("POST", "/predictions/"),
        ("GET", "/docs"),
        ("GET", "/health-check/"),
        ("POST", "/predictions/a/b/c"),
    ],
)
def test_unknown_path_404_empty(srv, method, path):
    r = srv.session.request(method, srv.url + path, timeout=10 * SLOW)
    assert r.status_code == 404
    assert r.content == b""


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("GET", "/predictions", "POST"),
        ("DELETE", "/predictions", "POST"),
        ("POST", "/health-check", "GET"),
        ("POST", "/", "GET"),
        ("PUT", "/openapi.json", "GET"),
        ("GET", "/shutdown", "POST"),
        ("GET", "/predictions/abc/cancel", "POST"),
        ("POST", "/predictions/abc", "PUT"),
        ("GET", "/predictions/abc", "PUT"),
        ("DELETE", "/predictions/abc", "PUT"),
    ],
)
def test_wrong_method_405_with_allow(srv, method, path, allowed):
    r = srv.session.request(method, srv.url + path, timeout=10 * SLOW)
    assert r.status_code == 405
    assert r.content == b""
    allow = [m.strip() for m in r.headers.get("Allow", "").split(",")]
    assert allowed in allow, r.headers


# ---- body errors ----


def test_415_text_plain(srv):
    r = post_raw(srv, "/predictions", b'{"input":{}}', content_type="text/plain")
    assert r.status_code == 415
    assert r.text == UNSUPPORTED_MEDIA
    assert is_text_plain(r)


@pytest.mark.parametrize("ctype", ["text/json", "application/x-www-form-urlencoded", "application/jsonx"])
def test_415_other_types(srv, ctype):
    r = post_raw(srv, "/predictions", b'{"input":{}}', content_type=ctype)
    assert r.status_code == 415
    assert r.text == UNSUPPORTED_MEDIA


def test_415_on_put(srv):
    r = requests.put(srv.url + "/predictions/x", data=b"{}", headers={"Content-Type": "text/plain"}, timeout=10 * SLOW)
    assert r.status_code == 415
    assert r.text == UNSUPPORTED_MEDIA


@pytest.mark.parametrize("data", [b"{not json", b'{"input": {"text": "x"}', b"", b"   ", b'{"a":1} trailing'])
def test_400_malformed_json(srv, data):
    r = post_raw(srv, "/predictions", data)
    assert r.status_code == 400, r.text
    assert r.text.startswith("Failed to parse the request body as JSON"), r.text
    assert is_text_plain(r)


@pytest.mark.parametrize(
    "data",
    [
        b'{"id": 5}',
        b"[]",
        b'[{"input": {}}]',
        b"null",
        b"42",
        b'"str"',
        b'{"context": {"a": 1}}',
        b'{"context": "nope"}',
        b'{"webhook_events_filter": ["bogus"]}',
        b'{"webhook_events_filter": null}',
        b'{"webhook": 12}',
    ],
)
def test_422_wrong_shape(srv, data):
    r = post_raw(srv, "/predictions", data)
    assert r.status_code == 422, (data, r.status_code, r.text)
    assert r.text.startswith("Failed to deserialize the JSON body into the target type: "), r.text
    assert is_text_plain(r)


def test_422_names_the_field(srv):
    r = post_raw(srv, "/predictions", b'{"id": 5}')
    assert r.status_code == 422
    assert r.text.startswith("Failed to deserialize the JSON body into the target type: id: "), r.text
    assert re.search(r" at line \d+ column \d+$", r.text), r.text


def test_null_id_means_generated(srv):
    # `id` is optional: an explicit null is the same as leaving it out
    r = srv.post("/predictions", {"id": None, "input": {"text": "n"}})
    assert r.status_code == 200, r.text
    assert re.match(r"^pred_[0-9a-f]+$", r.json()["id"])


def test_valid_shapes_accepted(srv):
    body = {
        "id": "shape-ok",
        "input": {"text": "ok"},
        "context": {"user": "alice", "k": ""},
        "webhook_events_filter": ["start", "output", "logs", "completed", "completed"],
    }
    r = srv.post("/predictions", body)
    assert r.status_code == 200, r.text
    assert r.json()["output"] == "ok"


def test_413_over_100_mib(srv):
    with RawConn(srv.port) as c:
        c.send(
            raw_request(
                "POST",
                "/predictions",
                headers={"Content-Type": "application/json", "Content-Length": str(100 * 1024 * 1024 + 1)},
            )
        )
        resp = c.read_response()
    assert resp.status == 413, resp
    assert resp.body == TOO_LARGE.encode()
    assert resp.headers["content-type"].split(";")[0] == "text/plain"
    # the server is fine afterwards
    assert srv.predict({"text": "after 413"}).json()["output"] == "after 413"


def test_413_chunked_over_100_mib(srv):
    # declared size per chunk, sent lazily: the server must refuse once the total passes 100 MiB
    with RawConn(srv.port) as c:
        c.send(
            b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n" % (1024 * 1024) + b" " * (1024 * 1024) + b"\r\n"
        resp = None
        try:
            for _ in range(101):
                c.send(chunk)
            c.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            resp = c.read_response()
        except (ConnectionError, OSError) as e:
            pytest.fail("no response to an oversized chunked body: %r" % e)
    assert resp.status == 413, resp
    assert resp.body == TOO_LARGE.encode()


# ---- connection handling ----


def test_300_sequential_keep_alive(srv):
    session = requests.Session()
    statuses = []
    outputs = []
    for i in range(300):
        r = session.post(srv.url + "/predictions", json={"input": {"text": "ka-%d" % i}}, timeout=30 * SLOW)
        statuses.append(r.status_code)
        outputs.append(r.json().get("output"))
    assert 409 not in statuses
    assert statuses == [200] * 300
    assert outputs == ["ka-%d" % i for i in range(300)]
    # all of it went over one connection
    pools = session.get_adapter(srv.url).poolmanager.pools
    assert sum(pools[k].num_connections for k in pools.keys()) == 1
    session.close()


def test_300_sequential_new_connections(srv):
    statuses = []
    for i in range(300):
        r = requests.post(
            srv.url + "/predictions",
            json={"input": {"text": "nc-%d" % i}},
            headers={"Connection": "close"},
            timeout=30 * SLOW,
        )
        statuses.append(r.status_code)
        assert r.json().get("output") == "nc-%d" % i, r.text
    assert statuses == [200] * 300


def test_keep_alive_raw_mixed_routes(srv):
    with RawConn(srv.port) as c:
        for i in range(20):
            c.send(raw_request("GET", "/health-check"))
            assert c.read_response().json()["status"] == "READY"
            c.send(raw_request("POST", "/predictions", json.dumps({"input": {"text": str(i)}}),
                               {"Content-Type": "application/json"}))
            resp = c.read_response()
            assert resp.status == 200
            assert resp.json()["output"] == str(i)
            c.send(raw_request("GET", "/nope"))
            assert c.read_response().status == 404


def test_pipelined_requests(srv):
    reqs = b"".join(
        raw_request("POST", "/predictions", json.dumps({"input": {"text": "pipe-%d" % i}}),
                    {"Content-Type": "application/json"})
        for i in range(5)
    )
    with RawConn(srv.port) as c:
        c.send(reqs)
        outs = []
        for _ in range(5):
            resp = c.read_response()
            assert resp.status == 200, resp
            outs.append(resp.json())
    assert [o["status"] for o in outs] == ["succeeded"] * 5, outs
    assert [o["output"] for o in outs] == ["pipe-%d" % i for i in range(5)]


def test_pipelined_mixed(srv):
    reqs = (
        raw_request("GET", "/")
        + raw_request("POST", "/predictions", '{"input":{"text":"p1"}}', {"Content-Type": "application/json"})
        + raw_request("GET", "/nope")
        + raw_request("GET", "/health-check")
        + raw_request("POST", "/predictions", '{"input":{"text":"p2"}}', {"Content-Type": "application/json"})
    )
    with RawConn(srv.port) as c:
        c.send(reqs)
        r1, r2, r3, r4, r5 = [c.read_response() for _ in range(5)]
    assert r1.status == 200 and set(r1.json()) == ROOT_KEYS
    assert r2.status == 200 and r2.json()["output"] == "p1"
    assert r3.status == 404 and r3.body == b""
    assert r4.status == 200 and r4.json()["status"] in ("READY", "BUSY")
    assert r5.status == 200 and r5.json()["output"] == "p2"


def test_chunked_request_body(srv):
    body = json.dumps({"input": {"text": "chunked body ✓"}}).encode()
    parts = [body[:7], body[7:20], body[20:]]
    data = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    with RawConn(srv.port) as c:
        c.send(
            b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        c.send(data)
        resp = c.read_response()
        assert resp.status == 200, resp
        assert resp.json()["output"] == "chunked body ✓"
        # connection still usable
        c.send(raw_request("GET", "/"))
        assert c.read_response().status == 200


def test_expect_100_continue(srv):
    body = json.dumps({"input": {"text": "expected"}}).encode()
    with RawConn(srv.port) as c:
        c.send(
            b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        interim = c.read_until(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        c.send(body)
        resp = c.read_response()
    assert resp.status == 200, resp
    assert resp.json()["output"] == "expected"


def test_connection_close_honoured(srv):
    with RawConn(srv.port) as c:
        c.send(raw_request("GET", "/", headers={"Connection": "close"}))
        resp = c.read_response()
        assert resp.status == 200
        # the server closes its side
        c.sock.settimeout(10 * SLOW)
        assert c.sock.recv(1) == b""


def test_concurrent_requests_while_predicting(srv, tmp_path):
    """Health, GET / and errors are answered while a sync prediction holds the only slot."""
    gate = tmp_path / "gate"
    result = {}

    def run():
        result["r"] = requests.post(srv.url + "/predictions",
                                    json={"input": {"text": "slow", "wait_for": str(gate)}}, timeout=60 * SLOW)

    t = threading.Thread(target=run)
    t.start()
    try:
        srv.wait_status("BUSY", timeout=10)
        assert srv.get("/").status_code == 200
        busy = requests.post(srv.url + "/predictions", json={"input": {"text": "x"}}, timeout=10 * SLOW)
        assert busy.status_code == 409
        assert busy.json() == {"error": "At capacity - all prediction slots busy", "status": "failed"}
    finally:
        gate.write_text("")
        t.join(60 * SLOW)
    assert result["r"].status_code == 200
    assert result["r"].json()["output"] == "slow"
    srv.wait_status("READY", timeout=10)


# ---- not ready ----


def test_predictions_503_while_starting(make_server, tmp_path):
    # setup() waits until the test drops a file, so the STARTING window is as long as needed
    s = make_server(
        code="""
        import os, time
        class Predictor:
            def setup(self):
                deadline = time.time() + 120
                while not os.path.exists("go") and time.time() < deadline:
                    time.sleep(0.02)
            def predict(self) -> str:
                return "ok"
        """,
        ready=False,
    )
    try:
        health = s.health()
        assert health["status"] == "STARTING"
        assert health["setup"]["status"] == "starting"
        assert "completed_at" not in health["setup"]
        r = s.predict()
        assert r.status_code == 503
        assert r.text == NOT_READY
        assert r.headers["Content-Type"].startswith("application/json")
        assert s.put("/predictions/early", {}).status_code == 503
        assert s.get("/openapi.json").status_code == 503
        assert s.get("/").status_code == 200
    finally:
        (tmp_path / "go").write_text("")
    s.wait_status("READY", timeout=30)
    assert s.predict().json()["output"] == "ok"
