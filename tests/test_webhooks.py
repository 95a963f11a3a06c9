"""Webhooks (docs/http-api.md#webhooks): the events and their bodies, the filter, throttling, headers, the
terminal retry policy, and dead targets (refusing / never answering) that must not hold up
responses, slots, other predictions, the health check or shutdown.

COGLET_WEBHOOK_RETRY_BASE scales the retry backoff so the retry series runs in moments."""

import json
import os
import signal
import threading
import time

import pytest

import coglet
from conftest import HOLD, SLOW, free_port
from receivers import Receiver, make_receiver, refusing_url  # noqa: F401 (fixture)

PREDICTOR = HOLD + """

from coglet import _sdk


class Predictor:
    def predict(self, text: str = "hello", lines: int = 0, fail: bool = False, gen: int = 0,
                gate: str = "", sleep: float = 0.0):
        for i in range(lines):
            print("line %d" % i)
            time.sleep(0.05)
        if sleep:
            time.sleep(sleep)
        hold(gate, "")
        if fail:
            raise ValueError("boom")
        if gen:
            return self._gen(gen)
        _sdk.current_scope().record_metric("answer", 42)
        return text

    def _gen(self, n):
        for i in range(n):
            yield "chunk %d" % i
            time.sleep(0.02)
"""

ASYNC = {"Prefer": "respond-async"}


def fast_env(**extra):
    env = {"COGLET_WEBHOOK_RETRY_BASE": "0.01", "COG_THROTTLE_RESPONSE_INTERVAL": "0"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def srv(make_module_server):
    """Throttle 0 (every log chunk sends), fast retries, an auth token."""
    s = make_module_server(code=PREDICTOR, env=fast_env(WEBHOOK_AUTH_TOKEN="s3cret-token"))
    assert s.health()["status"] == "READY", s.log_text()
    yield s
    hard_stop(s)  # retries to dead URLs may still be pending; shutdown is tested below


def hard_stop(s):
    if s.proc.poll() is None:
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait()


def by_status(hits, status):
    return [h for h in hits if isinstance(h.body, dict) and h.body.get("status") == status]


def quiet(rx, seconds=0.3):
    """Give late (fire-and-forget) webhooks a moment to land, then return every hit."""
    time.sleep(seconds * SLOW)
    return rx.snapshot()


# ---- events and bodies ----


def test_events_and_bodies_single_value(srv, make_receiver):
    rx = make_receiver()
    r = srv.post("/predictions", {"id": "wh-basic", "input": {"text": "hi"}, "webhook": rx.url}, headers=ASYNC)
    assert r.status_code == 202
    done = rx.wait_terminal("wh-basic")
    hits = quiet(rx)
    assert all(h.path == "/hook" for h in hits)
    start = [h.body for h in hits if h.body["status"] == "processing" and "output" not in h.body]
    assert start, [h.body for h in hits]
    assert start[0] == {"id": "wh-basic", "status": "processing", "logs": "", "metrics": {}}
    outputs = [h.body for h in hits if h.body["status"] == "processing" and "output" in h.body]
    assert outputs, [h.body for h in hits]
    assert outputs[-1]["output"] == ["hi"]  # the array of outputs so far, even for one value
    assert "predict_time" not in outputs[-1]["metrics"]
    # terminal: the final shape, predict_time, user metrics, no input
    assert done["status"] == "succeeded"
    assert done["output"] == "hi"
    assert done["metrics"]["answer"] == 42
    assert isinstance(done["metrics"]["predict_time"], float)
    assert "input" not in done and "error" not in done
    assert set(done) == {"id", "status", "logs", "output", "metrics"}
    assert len(rx.terminal("wh-basic")) == 1


def test_webhook_bodies_compact_sorted_json(srv, make_receiver):
    rx = make_receiver()
    srv.post("/predictions", {"id": "wh-sorted", "input": {"text": "s"}, "webhook": rx.url})
    rx.wait_terminal("wh-sorted")
    for h in quiet(rx, 0.2):
        assert h.raw.decode() == json.dumps(h.body, separators=(",", ":"), sort_keys=True), h.raw


def test_headers(srv, make_receiver):
    rx = make_receiver()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ts = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    r = srv.post("/predictions", {"id": "wh-headers", "input": {"text": "h"}, "webhook": rx.url},
                 headers={"traceparent": tp, "tracestate": ts})
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    rx.wait_terminal("wh-headers")
    hits = quiet(rx, 0.2)
    assert len(hits) >= 3  # start, output, completed
    for h in hits:
        assert h.headers["user-agent"] == "coglet/%s" % coglet.__version__, h.headers
        assert h.headers["content-type"] == "application/json", h.headers
        assert h.headers["authorization"] == "Bearer s3cret-token", h.headers
        assert h.headers["traceparent"] == tp, h.headers
        assert h.headers["tracestate"] == ts, h.headers


def test_no_trace_headers_when_request_had_none(srv, make_receiver):
    rx = make_receiver()
    srv.post("/predictions", {"id": "wh-notrace", "input": {"text": "h"}, "webhook": rx.url})
    rx.wait_terminal("wh-notrace")
    for h in quiet(rx, 0.2):
        assert "traceparent" not in h.headers and "tracestate" not in h.headers, h.headers


def test_no_authorization_without_token(make_server, make_receiver):
    s = make_server(code=PREDICTOR, env=fast_env(WEBHOOK_AUTH_TOKEN=None))
    rx = make_receiver()
    s.post("/predictions", {"id": "wh-noauth", "input": {"text": "h"}, "webhook": rx.url})
    rx.wait_terminal("wh-noauth")
    for h in quiet(rx, 0.2):
        assert "authorization" not in h.headers, h.headers


def test_sync_prediction_sends_webhooks_too(srv, make_receiver):
    rx = make_receiver()
    r = srv.post("/predictions", {"id": "wh-sync", "input": {"text": "sy"}, "webhook": rx.url})
    assert r.json()["output"] == "sy"
    assert rx.wait_terminal("wh-sync")["output"] == "sy"


def test_logs_events_with_zero_throttle(srv, make_receiver):
    rx = make_receiver()
    srv.post("/predictions", {"id": "wh-logs", "input": {"text": "x", "lines": 3}, "webhook": rx.url},
             headers=ASYNC)
    done = rx.wait_terminal("wh-logs")
    assert done["logs"] == "line 0\nline 1\nline 2\n"
    hits = quiet(rx)
    logs_bodies = [h.body for h in hits if h.body["status"] == "processing" and h.body["logs"] and "output" not in h.body]
    seen = sorted(b["logs"] for b in logs_bodies)
    assert seen == ["line 0\n", "line 0\nline 1\n", "line 0\nline 1\nline 2\n"], seen


def test_generator_output_events_grow(srv, make_receiver):
    rx = make_receiver()
    srv.post("/predictions", {"id": "wh-gen", "input": {"gen": 3}, "webhook": rx.url}, headers=ASYNC)
    done = rx.wait_terminal("wh-gen")
    assert done["status"] == "succeeded"
    assert done["output"] == ["chunk 0", "chunk 1", "chunk 2"]
    hits = quiet(rx)
    outs = sorted((h.body["output"] for h in hits if h.body["status"] == "processing" and "output" in h.body), key=len)
    assert outs == [["chunk 0"], ["chunk 0", "chunk 1"], ["chunk 0", "chunk 1", "chunk 2"]], outs


def test_failed_prediction_terminal_webhook(srv, make_receiver):
    rx = make_receiver()
    srv.post("/predictions", {"id": "wh-fail", "input": {"fail": True, "lines": 1}, "webhook": rx.url},
             headers=ASYNC)
    done = rx.wait_terminal("wh-fail")
    assert done["status"] == "failed"
    assert "ValueError: boom" in done["error"], done
    assert "predict_time" in done["metrics"]
    assert "output" not in done


# ---- the filter ----


@pytest.mark.parametrize(
    "events, expect",
    [
        (["completed"], {"completed"}),
        (["start"], {"start"}),
        (["output", "completed"], {"output", "completed"}),
        (["start", "start", "completed"], {"start", "completed"}),
        (["logs"], {"logs"}),
    ],
)
def test_events_filter(srv, make_receiver, events, expect):
    rx = make_receiver()
    pid = "wh-filter-" + "-".join(events)
    srv.post("/predictions", {"id": pid, "input": {"text": "f", "lines": 1}, "webhook": rx.url,
                              "webhook_events_filter": events})
    rx.wait_for(lambda hits: expect <= set(kinds(hits)), what=sorted(expect))
    hits = quiet(rx, 0.4)
    assert set(kinds(hits)) == expect, [h.body for h in hits]
    if events == ["completed"]:
        assert len(hits) == 1  # only the terminal one


def kinds(hits):
    out = []
    for h in hits:
        b = h.body
        if b["status"] != "processing":
            out.append("completed")
        elif "output" in b:
            out.append("output")
        elif b["logs"]:
            out.append("logs")
        else:
            out.append("start")
    return out


def test_empty_filter_sends_nothing(srv, make_receiver):
    rx = make_receiver()
    r = srv.post("/predictions", {"id": "wh-none", "input": {"text": "n", "lines": 1}, "webhook": rx.url,
                                  "webhook_events_filter": []})
    assert r.json()["status"] == "succeeded"
    assert quiet(rx, 0.5) == []


# ---- throttling ----


def test_throttle_drops_start_and_logs_not_output(make_server, make_receiver):
    """Interval 60 s >= 10 s: even `start` is dropped; output and completed never are."""
    s = make_server(code=PREDICTOR, env=fast_env(COG_THROTTLE_RESPONSE_INTERVAL="60"))
    rx = make_receiver()
    s.post("/predictions", {"id": "wh-thr", "input": {"gen": 3, "lines": 3}, "webhook": rx.url})
    rx.wait_terminal("wh-thr")
    hits = quiet(rx)
    assert [h.body for h in hits if h.body["status"] == "processing" and "output" not in h.body] == []
    outs = [h.body for h in hits if h.body["status"] == "processing" and "output" in h.body]
    assert len(outs) == 3, [h.body for h in hits]


def test_throttle_default_keeps_start_drops_quick_logs(make_server, make_receiver):
    """Default 0.5 s: start is sent; logs arriving right after it are dropped (not delayed)."""
    s = make_server(code=PREDICTOR, env={"COGLET_WEBHOOK_RETRY_BASE": "0.01", "COG_THROTTLE_RESPONSE_INTERVAL": None})
    rx = make_receiver()
    s.post("/predictions", {"id": "wh-thr2", "input": {"text": "t", "lines": 3}, "webhook": rx.url})
    done = rx.wait_terminal("wh-thr2")
    assert done["logs"] == "line 0\nline 1\nline 2\n"
    hits = quiet(rx, 0.8)
    processing = [h.body for h in hits if h.body["status"] == "processing"]
    starts = [b for b in processing if not b["logs"] and "output" not in b]
    logs = [b for b in processing if b["logs"] and "output" not in b]
    assert len(starts) == 1, processing
    assert logs == [], processing  # 3 lines within ~0.15 s of start: all throttled away


# ---- terminal retries ----


def test_terminal_retried_on_5xx_and_429(make_server, make_receiver):
    s = make_server(code=PREDICTOR, env=fast_env())
    rx = make_receiver([500, 503, 429, 502, 504, 200])
    s.post("/predictions", {"id": "wh-retry", "input": {"text": "r"}, "webhook": rx.url,
                            "webhook_events_filter": ["completed"]})
    rx.wait_count(6, timeout=15)
    hits = quiet(rx, 0.5)
    assert len(hits) == 6, [h.body for h in hits]  # delivered on the 6th, then nothing more
    assert all(h.body == hits[0].body for h in hits)
    assert hits[0].body["status"] == "succeeded"
    # backoff: before retry n the server waits base * 2^n (base 0.01 s): gaps only grow
    gaps = [b.time - a.time for a, b in zip(hits, hits[1:])]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= 0.01 * 2 ** n * 0.8, (n, gaps)


def test_terminal_retried_12_times_then_given_up(make_server, make_receiver):
    s = make_server(code=PREDICTOR, env=fast_env(COGLET_WEBHOOK_RETRY_BASE="0.0005"))
    rx = make_receiver(default=500)
    s.post("/predictions", {"id": "wh-13", "input": {"text": "r"}, "webhook": rx.url,
                            "webhook_events_filter": ["completed"]})
    rx.wait_count(13, timeout=20)
    hits = quiet(rx, 1.0)  # the longest backoff at this base is 0.512 s
    assert len(hits) == 13, len(hits)
    assert s.health()["status"] == "READY"


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_terminal_not_retried_on_other_4xx(srv, make_receiver, status):
    rx = make_receiver(default=status)
    srv.post("/predictions", {"id": "wh-4xx-%d" % status, "input": {"text": "r"}, "webhook": rx.url,
                              "webhook_events_filter": ["completed"]})
    rx.wait_count(1)
    assert len(quiet(rx, 0.5)) == 1  # base 0.01: a retry would have come after 0.02 s


def test_terminal_retried_after_dropped_connection(srv, make_receiver):
    rx = make_receiver(["drop", "drop", 200])
    srv.post("/predictions", {"id": "wh-drop", "input": {"text": "d"}, "webhook": rx.url,
                              "webhook_events_filter": ["completed"]})
    rx.wait_count(3)
    hits = quiet(rx, 0.5)
    assert len(hits) == 3
    assert hits[-1].body["status"] == "succeeded"


def test_terminal_retried_after_refused_connection(srv):
    """The first attempts go to a port nobody listens on; then a receiver appears there."""
    port = free_port()
    url = "http://127.0.0.1:%d/hook" % port
    r = srv.post("/predictions", {"id": "wh-refused", "input": {"text": "late"}, "webhook": url,
                                  "webhook_events_filter": ["completed"]})
    assert r.json()["status"] == "succeeded"
    time.sleep(0.15)  # a few refused attempts (retries after 0.02, 0.04, 0.08 s ...)
    rx = Receiver(port=port)
    try:
        done = rx.wait_terminal("wh-refused", timeout=15)
        assert done["output"] == "late"
        assert len(quiet(rx, 0.3)) == 1
    finally:
        rx.close()


def test_terminal_retried_after_timeout(make_server, make_receiver):
    s = make_server(code=PREDICTOR, env=fast_env(COGLET_WEBHOOK_TIMEOUT="0.5"))
    rx = make_receiver(["hang", 200])
    s.post("/predictions", {"id": "wh-timeout", "input": {"text": "t"}, "webhook": rx.url,
                            "webhook_events_filter": ["completed"]})
    rx.wait_count(2, timeout=10)
    hits = rx.snapshot()
    assert hits[1].time - hits[0].time >= 0.45, "second attempt before the 0.5 s timeout"
    assert hits[1].body["status"] == "succeeded"


@pytest.mark.parametrize("code", [307, 308])
def test_terminal_redirect_followed(srv, make_receiver, code):
    rx = make_receiver(["redirect %d /moved" % code])
    pid = "wh-redirect-%d" % code
    srv.post("/predictions", {"id": pid, "input": {"text": "r"}, "webhook": rx.url,
                              "webhook_events_filter": ["completed"]})
    rx.wait_count(2, timeout=10)
    hits = quiet(rx, 0.3)
    assert [h.path for h in hits] == ["/hook", "/moved"], [(h.path, h.body) for h in hits]
    assert hits[1].body["id"] == pid and hits[1].body["status"] == "succeeded"
    assert hits[1].raw == hits[0].raw


def test_invalid_webhook_url_harmless(srv):
    for url in ("not a url", "ftp://127.0.0.1:1/x", "http://"):
        r = srv.post("/predictions", {"input": {"text": "ok"}, "webhook": url})
        assert r.status_code == 200
        assert r.json()["output"] == "ok"
    assert srv.health()["status"] == "READY"


# ---- dead targets ----


def run_against_dead_target(srv, dead_url, good):
    """20 predictions whose webhooks go to a dead target, some sync, some async, one with a
    working receiver in the middle: every answer arrives, no 409, health stays usable."""
    results = []
    for i in range(20):
        body = {"id": "dead-%d" % i, "input": {"text": "t%d" % i}, "webhook": dead_url}
        if i % 2:
            r = srv.post("/predictions", body, timeout=10 * SLOW)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "succeeded" and r.json()["output"] == "t%d" % i
        else:
            r = srv.post("/predictions", body, headers=ASYNC, timeout=10 * SLOW)
            assert r.status_code == 202, r.text
            srv.wait_status("READY", timeout=10)
        results.append(r.status_code)
        h = srv.get("/health-check", timeout=10 * SLOW)
        assert h.status_code == 200 and h.json()["status"] in ("READY", "BUSY")
        if i == 10:
            r = srv.post("/predictions", {"id": "alive", "input": {"text": "fine"}, "webhook": good.url},
                         timeout=10 * SLOW)
            assert r.json()["output"] == "fine"
            assert good.wait_terminal("alive")["output"] == "fine"
    assert 409 not in results
    # concurrently: a sync prediction while the webhooks of the others are still stuck
    out = {}

    def hit():
        out["r"] = srv.post("/predictions", {"input": {"text": "last"}, "webhook": dead_url}, timeout=10 * SLOW)

    t = threading.Thread(target=hit)
    t.start()
    t.join(15 * SLOW)
    assert "r" in out and out["r"].json()["output"] == "last"
    assert srv.health()["status"] == "READY"


@pytest.mark.parametrize("kind", ["refuses", "hangs"])
def test_dead_target_never_delays_anything(make_server, make_receiver, kind):
    s = make_server(code=PREDICTOR, env={"COGLET_WEBHOOK_RETRY_BASE": "0.01"})
    good = make_receiver()
    dead_url = refusing_url() if kind == "refuses" else make_receiver(hang=True).url
    run_against_dead_target(s, dead_url, good)
    # (shutdown with webhooks stuck is the next test; don't let teardown wait on it here)
    hard_stop(s)


@pytest.mark.parametrize("kind", ["refuses", "hangs"])
def test_dead_target_does_not_delay_shutdown(make_server, make_receiver, kind):
    """Terminal webhooks still being retried (default base 0.1 s: minutes of retries) or
    stuck in a request (default 30 s timeout) must not hold the process at SIGTERM."""
    s = make_server(code=PREDICTOR)
    dead_url = refusing_url() if kind == "refuses" else make_receiver(hang=True).url
    for i in range(3):
        r = s.post("/predictions", {"input": {"text": "x"}, "webhook": dead_url})
        assert r.json()["status"] == "succeeded"
    time.sleep(0.2)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    try:
        rc = s.proc.wait(timeout=5 * SLOW)
    except Exception:
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait()
        raise AssertionError("server still running %.1f s after SIGTERM with a %s webhook target:\n%s" % (
            time.time() - t0, kind, s.log_text()[-3000:]))
    assert rc == 0, s.log_text()[-3000:]


# ---- kept-alive connections the receiver closes while they are idle ----


class _IdleClosingReceiver:
    """Answers every request on a kept-alive connection, then closes that connection once it
    has been idle for `idle` seconds (as a proxy's keep-alive timeout does); records bodies."""

    def __init__(self, idle=0.1):
        import socket

        self.idle = idle
        self.bodies = []
        self.connections = 0
        self.cond = threading.Condition()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d/hook" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.cond:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(self.idle)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":", 1)[1])
                while len(rest) < n:
                    rest += conn.recv(65536)
                body, buf = rest[:n], rest[n:]
                with self.cond:
                    self.bodies.append(json.loads(body))
                    self.cond.notify_all()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
        except (OSError, ValueError):
            pass  # the idle timeout (socket.timeout is an OSError): close it
        finally:
            conn.close()

    def wait_terminals(self, n, timeout=10):
        deadline = time.time() + timeout * SLOW
        with self.cond:
            while sum(1 for b in self.bodies if b.get("status") == "succeeded") < n:
                left = deadline - time.time()
                assert left > 0, self.bodies
                self.cond.wait(left)

    def close(self):
        self.sock.close()


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _local_hostname():
    """This machine's name when it resolves to a loopback address (through /etc/hosts): a
    URL with it makes libcurl resolve, which it does on a thread it signals through a
    socketpair that it closes itself."""
    import socket

    try:
        name = socket.gethostname()
        addr = socket.getaddrinfo(name, 80, socket.AF_INET)[0][4][0]
    except OSError:
        return None
    return name if addr.startswith("127.") else None


@pytest.mark.parametrize("host", ["ip", "name"])
def test_idle_connection_closed_by_the_receiver_is_not_watched_or_reused(srv, host):
    """The client keeps a kept-alive connection's poll handle between requests; the receiver
    closing that idle connection must neither spin the loop (a closed socket is readable for
    good) nor lose the next webhook, which goes out on a new connection. With a host name,
    every new connection is preceded by a resolve, whose socketpair curl closes itself: its
    fd number comes back at once for the next socket, which must not inherit a stale poll."""
    rx = _IdleClosingReceiver(idle=0.1)
    url = rx.url
    if host == "name":
        name = _local_hostname()
        if not name:
            pytest.skip("this machine's name does not resolve to a loopback address")
        url = url.replace("127.0.0.1", name)
    try:
        for i in range(4):
            r = srv.post("/predictions", {"id": "wh-idle-%s-%d" % (host, i), "input": {"text": "i"}, "webhook": url,
                                          "webhook_events_filter": ["completed"]}, headers=ASYNC)
            assert r.status_code == 202
            rx.wait_terminals(i + 1)
            time.sleep(0.3)  # the receiver closes the connection while it is idle
        assert rx.connections >= 4  # every webhook after an idle close found a new connection
        before = _cpu_seconds(srv.proc.pid)
        time.sleep(1.0)
        spent = _cpu_seconds(srv.proc.pid) - before
        assert spent < 0.3, "the server used %.2f s of CPU in 1 s of idling" % spent
        ids = sorted(b["id"] for b in rx.bodies if b.get("status") == "succeeded")
        assert ids == ["wh-idle-%s-%d" % (host, i) for i in range(4)]
        assert srv.health()["status"] == "READY"  # the server's own connections still served
    finally:
        rx.close()
