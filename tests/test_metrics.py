"""GET /metrics: the Prometheus text exposition (format 0.0.4), parsed with prometheus_client's
own parser, checked against work the test did itself (docs/operations.md, "Metrics")."""

import os
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import HOLD, SLOW
from receivers import Receiver

PREDICTOR = HOLD + """
from cog import Path


class Predictor:
    def predict(self, mode: str = "ok", gate: str = "", started: str = "") -> Path:
        hold(gate, started)
        if mode == "fail":
            raise ValueError("asked to fail")
        out = "/tmp/coglet-metrics-out-%d.txt" % os.getpid()
        with open(out, "w") as f:
            f.write("x" * 1000)
        return Path(out)
"""


def scrape(srv):
    r = srv.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    families = {}
    for fam in text_string_to_metric_families(r.text):
        families[fam.name] = fam
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


@pytest.fixture(scope="module")
def uploads():
    rx = Receiver()
    yield rx
    rx.close()


@pytest.fixture(scope="module")
def srv(make_module_server, uploads):
    s = make_module_server(code=PREDICTOR, args=["--upload-url", "http://127.0.0.1:%d/up/" % uploads.port])
    assert s.health()["status"] == "READY", s.log_text()
    return s


def test_build_info_and_idle_gauges(srv):
    families, samples = scrape(srv)
    info = [s for s in families["coglet_build_info"].samples]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels["version"] == srv.health()["version"]["coglet"]
    assert info[0].labels["git_sha"] == srv.health()["version"]["git_sha"]
    assert families["coglet_build_info"].type == "gauge"
    assert value(samples, "coglet_slots_total") == 1
    assert value(samples, "coglet_slots_busy") == 0
    assert value(samples, "coglet_wait_queue_depth") == 0
    assert value(samples, "coglet_wait_queue_capacity") == 0
    assert value(samples, "coglet_http_connections_open") >= 1  # this scrape's own
    assert families["coglet_setup_duration_seconds"].type == "histogram"
    assert value(samples, "coglet_setup_duration_seconds_count", outcome="succeeded") == 1


def test_counts_after_known_work(srv, uploads, tmp_path):
    _, before = scrape(srv)
    hooks = Receiver()
    try:
        ok = [srv.predict({"mode": "ok"}) for _ in range(2)]
        assert all(r.json()["status"] == "succeeded" for r in ok), [r.text for r in ok]
        assert srv.predict({"mode": "fail"}).json()["status"] == "failed"
        r = srv.post("/predictions", {"input": {"mode": "ok"}, "webhook": hooks.url,
                                      "webhook_events_filter": ["completed"]},
                     headers={"Prefer": "respond-async"})
        assert r.status_code == 202
        hooks.wait_terminal(r.json()["id"])
        # one refused: the only slot is busy
        gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
        t = threading.Thread(target=lambda: srv.predict({"gate": gate, "started": started}))
        t.start()
        deadline = time.time() + 10 * SLOW
        while not os.path.exists(started):
            assert time.time() < deadline
            time.sleep(0.01)
        assert srv.predict({"mode": "ok"}).status_code == 409
        _, during = scrape(srv)
        assert value(during, "coglet_slots_busy") == 1
        assert value(during, "coglet_predictions_in_flight") == 1
        open(gate, "w").close()
        t.join(30 * SLOW)
        deadline = time.time() + 10 * SLOW
        while True:  # the terminal webhook's attempt is counted when its answer arrives
            families, after = scrape(srv)
            if value(after, "coglet_webhook_attempts_total", event="completed", outcome="delivered") > value(
                    before, "coglet_webhook_attempts_total", event="completed", outcome="delivered"):
                break
            assert time.time() < deadline, "webhook attempt never counted"
            time.sleep(0.05)
    finally:
        hooks.close()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("coglet_predictions_started_total", door="http") == 5
    assert delta("coglet_predictions_finished_total", door="http", status="succeeded") == 4
    assert delta("coglet_predictions_finished_total", door="http", status="failed") == 1
    assert delta("coglet_predictions_rejected_total", door="http", reason="busy") == 1
    assert delta("coglet_prediction_duration_seconds_count", status="succeeded") == 4
    assert delta("coglet_prediction_duration_seconds_count", status="failed") == 1
    assert delta("coglet_prediction_duration_seconds_sum", status="succeeded") > 0
    assert delta("coglet_prediction_wait_seconds_count") == 5
    assert delta("coglet_webhook_attempts_total", event="completed", outcome="delivered") == 1
    assert delta("coglet_uploads_total", outcome="uploaded") == 4
    assert delta("coglet_upload_bytes_total") == 4000
    assert delta("coglet_http_requests_total", route="/predictions", code="2xx") == 5
    assert delta("coglet_http_requests_total", route="/predictions", code="4xx") == 1
    assert delta("coglet_http_received_bytes_total") > 0
    assert delta("coglet_http_sent_bytes_total") > 0
    assert value(after, "coglet_predictions_in_flight") == 0
    assert value(after, "coglet_slots_busy") == 0
    # histogram buckets are cumulative and end in +Inf == count
    buckets = [s for s in families["coglet_prediction_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["status"] == "succeeded"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)
    assert buckets[-1].labels["le"] == "+Inf"
    assert counts[-1] == value(after, "coglet_prediction_duration_seconds_count", status="succeeded")
    assert families["coglet_predictions_finished"].type == "counter"


def test_ids_never_become_labels(srv):
    srv.post("/predictions/abc123/cancel")
    srv.get("/predictions/some-id-xyz")  # 405
    _, samples = scrape(srv)
    routes = {dict(k[1]).get("route") for k in samples if k[0] == "coglet_http_requests_total"}
    assert "/predictions/{id}/cancel" in routes and "/predictions/{id}" in routes
    assert not any("abc123" in (r or "") or "xyz" in (r or "") for r in routes)


def test_a_scrape_never_waits_for_a_prediction(srv, tmp_path):
    gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
    t = threading.Thread(target=lambda: srv.predict({"gate": gate, "started": started}))
    t.start()
    try:
        deadline = time.time() + 10 * SLOW
        while not os.path.exists(started):
            assert time.time() < deadline
            time.sleep(0.01)
        _, samples = scrape(srv)  # answered while the prediction still runs
        assert value(samples, "coglet_slots_busy") == 1
    finally:
        open(gate, "w").close()
        t.join(30 * SLOW)


def test_worker_crashes_are_counted(make_server):
    import signal
    s = make_server(code=PREDICTOR)
    for pid in s.worker_pids():
        os.kill(pid, signal.SIGKILL)
    s.wait_status("DEFUNCT")
    _, samples = scrape(s)
    assert value(samples, "coglet_worker_crashes_total") == 1
    assert value(samples, "coglet_worker_restarts_total") == 0
    assert value(samples, "coglet_slots_total") == 0
