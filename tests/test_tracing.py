"""OpenTelemetry traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, each prediction is a span with
children for the wait for a slot, the run in the worker, each upload and the webhook
delivery; the parent comes from the incoming traceparent and our context goes out on
webhooks and uploads. A local OTLP/HTTP receiver decodes every request into the
opentelemetry-proto ExportTraceServiceRequest (docs/operations.md, "Tracing")."""

import base64
import http.server
import json
import re
import threading
import time

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import SLOW
from receivers import Receiver, refusing_url

PREDICTOR = """
import os
from cog import Path


class Predictor:
    def predict(self, fail: bool = False) -> Path:
        if fail:
            raise ValueError("asked to fail")
        out = "/tmp/coglet-trace-out-%d.txt" % os.getpid()
        with open(out, "w") as f:
            f.write("traced")
        return Path(out)
"""

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def to_proto(raw):
    """OTLP/JSON carries ids as hex; protobuf's JSON mapping wants base64 for bytes."""
    doc = json.loads(raw)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for k in ID_FIELDS:
                    if k in span:
                        span[k] = base64.b64encode(bytes.fromhex(span[k])).decode()
    return json_format.Parse(json.dumps(doc), ExportTraceServiceRequest())


class OtlpReceiver:
    def __init__(self):
        self.requests = []  # (headers, ExportTraceServiceRequest)
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                msg = to_proto(raw)  # a request that does not decode fails the test below
                with receiver.cond:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, self.path, msg))
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def spans(self):
        out = []
        with self.cond:
            for _, _, msg in self.requests:
                for rs in msg.resource_spans:
                    for ss in rs.scope_spans:
                        out.extend(ss.spans)
        return out

    def wait_spans(self, pred, timeout=15):
        deadline = time.time() + timeout * SLOW
        while True:
            spans = self.spans()
            if pred(spans):
                return spans
            assert time.time() < deadline, "spans never arrived: %r" % [s.name for s in spans]
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def attrs(span):
    return {a.key: (a.value.string_value or a.value.int_value) for a in span.attributes}


def for_prediction(spans, pred_id):
    return [s for s in spans if attrs(s).get("coglet.prediction.id") == pred_id]


@pytest.fixture
def otlp():
    rx = OtlpReceiver()
    yield rx
    rx.close()


def start(make_server, otlp, uploads, **env):
    e = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_SERVICE_NAME": "my-model",
         "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=secret%20value, x-b=2"}
    e.update(env)
    return make_server(code=PREDICTOR, env=e, args=["--upload-url", "http://127.0.0.1:%d/up/" % uploads.port])


def test_the_tree_of_spans_and_propagation(make_server, otlp):
    uploads, hooks = Receiver(), Receiver()
    try:
        s = start(make_server, otlp, uploads)
        r = s.post("/predictions", {"id": "traced-1", "input": {}, "webhook": hooks.url,
                                    "webhook_events_filter": ["start", "completed"]},
                   headers={"traceparent": "00-%s-%s-01" % (TRACE_ID, PARENT_ID)})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        hooks.wait_terminal("traced-1")
        want = {"prediction", "wait for slot", "predict", "upload", "webhook"}
        # each webhook delivery is a span: here `start` and `completed`
        spans = otlp.wait_spans(lambda sp: want <= {x.name for x in sp}
                                and sum(x.name == "webhook" for x in sp) == 2)
        hook_spans = {attrs(x)["coglet.webhook.event"]: x for x in spans if x.name == "webhook"}
        assert set(hook_spans) == {"start", "completed"}, hook_spans
        by_name = {x.name: x for x in spans if x.name != "webhook"}
        by_name["webhook"] = hook_spans["completed"]
        root = by_name["prediction"]
        assert root.trace_id.hex() == TRACE_ID
        assert root.parent_span_id.hex() == PARENT_ID
        assert root.kind == root.SPAN_KIND_SERVER
        assert attrs(root)["coglet.prediction.id"] == "traced-1"
        assert attrs(root)["coglet.prediction.status"] == "succeeded"
        assert attrs(root)["coglet.door"] == "http"
        for name, child in [(n, by_name[n]) for n in want - {"prediction"}] + [("start webhook", hook_spans["start"])]:
            assert child.trace_id.hex() == TRACE_ID, name
            assert child.parent_span_id == root.span_id, name
            assert child.start_time_unix_nano <= child.end_time_unix_nano, name
        assert root.start_time_unix_nano <= by_name["predict"].start_time_unix_nano
        assert attrs(by_name["upload"])["coglet.upload.bytes"] == 6
        # our context goes out: each webhook's parent is its own delivery span, the upload's
        # the upload span
        term = hooks.terminal("traced-1")[0]
        assert term.headers["traceparent"] == "00-%s-%s-01" % (TRACE_ID, by_name["webhook"].span_id.hex())
        start_hit = [h for h in hooks.for_id("traced-1") if h.body["status"] == "processing"][0]
        assert start_hit.headers["traceparent"] == "00-%s-%s-01" % (TRACE_ID, hook_spans["start"].span_id.hex())
        put = [h for h in uploads.snapshot() if h.path.startswith("/up/")][0]
        assert put.headers["traceparent"] == "00-%s-%s-01" % (TRACE_ID, by_name["upload"].span_id.hex())
        # the exporter's own request
        headers, path, msg = otlp.requests[0]
        assert path == "/v1/traces"
        assert headers["content-type"] == "application/json"
        assert headers["x-api-key"] == "secret value" and headers["x-b"] == "2"
        res = {a.key: a.value.string_value for a in msg.resource_spans[0].resource.attributes}
        assert res["service.name"] == "my-model"
    finally:
        uploads.close()
        hooks.close()


def test_a_new_trace_without_traceparent_and_errors_marked(make_server, otlp):
    uploads = Receiver()
    try:
        s = start(make_server, otlp, uploads)
        ok = s.post("/predictions", {"id": "fresh-1", "input": {}}).json()
        bad = s.post("/predictions", {"id": "bad-1", "input": {"fail": True}}).json()
        assert ok["status"] == "succeeded" and bad["status"] == "failed"
        spans = otlp.wait_spans(lambda sp: {"fresh-1", "bad-1"} <= {attrs(x).get("coglet.prediction.id")
                                                                   for x in sp if x.name == "prediction"})
        roots = {attrs(x)["coglet.prediction.id"]: x for x in spans if x.name == "prediction"}
        assert roots["fresh-1"].parent_span_id == b""
        assert roots["fresh-1"].trace_id != roots["bad-1"].trace_id
        assert roots["fresh-1"].status.code != roots["fresh-1"].status.STATUS_CODE_ERROR
        assert roots["bad-1"].status.code == roots["bad-1"].status.STATUS_CODE_ERROR
        assert "asked to fail" in roots["bad-1"].status.message
        assert {x.name for x in for_prediction(spans, "bad-1")} >= {"prediction"}
        assert s.get("/metrics").status_code == 200
        text = s.get("/metrics").text
        exported = float(re.search(r"^coglet_trace_spans_exported_total (\S+)$", text, re.M).group(1))
        assert exported >= 2
    finally:
        uploads.close()


def test_a_down_exporter_drops_and_counts_and_never_slows_predictions(make_server):
    uploads = Receiver()
    try:
        s = make_server(code=PREDICTOR, env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": refusing_url(),
                                             "OTEL_BSP_SCHEDULE_DELAY": "50"},
                        args=["--upload-url", "http://127.0.0.1:%d/up/" % uploads.port])
        for _ in range(3):
            assert s.predict().json()["status"] == "succeeded"
        deadline = time.time() + 15 * SLOW
        while True:
            m = re.search(r"^coglet_trace_spans_dropped_total (\S+)$", s.get("/metrics").text, re.M)
            if m and float(m.group(1)) > 0:
                break
            assert time.time() < deadline, "dropped spans never counted"
            time.sleep(0.05)
        s.wait_log("dropped .* span")
        assert s.predict().json()["status"] == "succeeded"
    finally:
        uploads.close()


def test_without_an_endpoint_the_caller_traceparent_goes_through(make_server):
    hooks = Receiver()
    try:
        s = make_server(code=PREDICTOR, env={"OTEL_EXPORTER_OTLP_ENDPOINT": None})
        tp = "00-%s-%s-01" % (TRACE_ID, PARENT_ID)
        r = s.post("/predictions", {"id": "plain-1", "input": {}, "webhook": hooks.url,
                                    "webhook_events_filter": ["completed"]}, headers={"traceparent": tp})
        assert r.status_code == 200
        assert hooks.terminal("plain-1") or hooks.wait_terminal("plain-1")
        assert hooks.terminal("plain-1")[0].headers["traceparent"] == tp
        assert "coglet_trace_spans_exported_total 0" in s.get("/metrics").text
    finally:
        hooks.close()
