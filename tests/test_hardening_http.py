"""The HTTP transport against hostile clients (docs/operations.md, "Limits and timeouts"):
protocol abuse gets one clear 4xx, a log line and a closed connection; slow and idle clients
are cut off; a client that never reads its answers cannot grow the server; connections over
the limit get 503 while existing ones keep working, also when the process is out of fds."""

import json
import os
import re
import resource
import socket
import sys
import threading
import time

import pytest

from conftest import SANITIZED, SLOW, raw_request

ECHO = """
import time


class Predictor:
    def predict(self, text: str = "x", sleep: float = 0.0) -> str:
        time.sleep(sleep)
        return text
"""

# A file output is read by the server process itself (as a data URL): it needs a free fd.
FILE_OUTPUT = """
import os
import tempfile

from cog import Path


class Predictor:
    def predict(self, text: str = "x") -> Path:
        fd, name = tempfile.mkstemp(suffix=".txt")
        os.write(fd, text.encode())
        os.close(fd)
        return Path(name)
"""

STREAMING = """
import time


class Predictor:
    def predict(self, n: int = 3, pause: float = 0.0):
        for i in range(n):
            time.sleep(pause)
            yield "chunk %d" % i
"""
STREAMING_SCHEMA = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "paths": {"/predictions": {"post": {"summary": "Predict", "x-cog-streaming": True}}},
    "components": {
        "schemas": {
            "Input": {
                "title": "Input",
                "type": "object",
                "properties": {
                    "n": {"title": "N", "type": "integer", "default": 3, "x-order": 0},
                    "pause": {"title": "Pause", "type": "number", "default": 0.0, "x-order": 1},
                },
            },
            "Output": {"title": "Output", "type": "array", "items": {"type": "string"},
                       "x-cog-array-type": "iterator"},
        }
    },
}

# Short deadlines for the timeout tests; "closed within" bounds stay generous.
FAST = {
    "COGLET_HTTP_HEADER_TIMEOUT": "1",
    "COGLET_HTTP_BODY_TIMEOUT": "1",
    "COGLET_HTTP_IDLE_TIMEOUT": "1",
}
BOUND = 15 * SLOW
TOO_LARGE = b"Failed to buffer the request body: length limit exceeded"


@pytest.fixture(scope="module")
def srv(make_module_server):
    s = make_module_server(code=ECHO)
    assert s.health()["status"] == "READY", s.log_text()
    return s


@pytest.fixture(scope="module")
def fast(make_module_server):
    s = make_module_server(code=STREAMING, env=FAST,
                           files={".cog/openapi_schema.json": STREAMING_SCHEMA})
    assert s.health()["status"] == "READY", s.log_text()
    return s


def connect(srv, timeout=BOUND):
    return socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)


class Reader:
    """Reads responses off a raw socket; `closed()` tells whether the server closed it."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("closed; unread %r" % self.buf[:200])
        self.buf += chunk

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed(self):
        """True once the server has closed (EOF or reset) with nothing more sent; False if
        more bytes came instead."""
        try:
            while not self.buf:
                self._fill()
        except EOFError:
            return True
        except ConnectionResetError:
            return not self.buf
        return False


def reject_exchange(srv, data):
    """Sends `data` on a fresh connection: exactly one answer, then the server closes."""
    with connect(srv) as s:
        s.sendall(data)
        r = Reader(s)
        status, headers, body = r.response()
        assert headers.get("connection") == "close", headers
        assert r.closed(), "a second answer after the error: %r" % r.buf
        return status, body


def alive(srv):
    r = srv.get("/")
    assert r.status_code == 200
    return True


def post(path, body, extra=b""):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" % path.encode() + extra +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


# ---- protocol abuse: one 4xx, a log line, a closed connection ----


def test_content_length_with_transfer_encoding_is_refused_and_closed(srv):
    smuggled = raw_request("GET", "/health-check")
    data = (b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(smuggled)) + smuggled)
    status, body = reject_exchange(srv, data)
    assert (status, body) == (400, b"Bad Request")
    srv.wait_log(r"malformed HTTP request: HPE_UNEXPECTED_CONTENT_LENGTH")
    assert alive(srv)


@pytest.mark.parametrize("lengths", [(2, 3), (2, 2)])
def test_two_content_lengths(srv, lengths):
    data = (b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n{}x" % lengths)
    assert reject_exchange(srv, data) == (400, b"Bad Request")
    srv.wait_log(r"Duplicate Content-Length")


@pytest.mark.parametrize("size", [b"zz", b"-1", b"1 2"])
def test_bad_chunk_size(srv, size):
    data = (b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\n{}\r\n0\r\n\r\n")
    assert reject_exchange(srv, data) == (400, b"Bad Request")
    srv.wait_log(r"HPE_INVALID_CHUNK_SIZE")


def test_overflowing_chunk_size(srv):
    data = (b"POST /predictions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"f" * 20 + b"\r\n{}\r\n0\r\n\r\n")
    assert reject_exchange(srv, data) == (400, b"Bad Request")
    srv.wait_log(r"Chunk size overflow")


def test_chunk_announced_over_the_body_limit_is_413_at_once(srv):
    # 2^60 fits llhttp's counter; it is refused from the chunk header, before any body
    data = b"POST /predictions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n{}"
    assert reject_exchange(srv, data) == (413, TOO_LARGE)
    srv.wait_log(r"rejected request: 413 chunk over the body limit")


@pytest.mark.parametrize("split", [False, True])
def test_obs_fold_is_refused(srv, split):
    parts = [b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n", b" b\r\n\r\n"]
    with connect(srv) as s:
        s.sendall(parts[0])
        if split:
            time.sleep(0.2)  # a separate read: the fold is seen across the two
        s.sendall(parts[1])
        r = Reader(s)
        status, headers, body = r.response()
        assert (status, body) == (400, b"Folded header lines (obs-fold) are not supported")
        assert r.closed()
    srv.wait_log(r"rejected request: 400 obs-fold in a header")


def test_split_header_value_is_not_a_fold(srv):
    with connect(srv) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Split: a")
        time.sleep(0.2)
        s.sendall(b"b\r\n\r\n")
        assert Reader(s).response()[0] == 200


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\nX-A: y\r\n\r\n",
], ids=["bare-lf", "bare-lf-in-headers"])
def test_bare_lf(srv, data):
    assert reject_exchange(srv, data) == (400, b"Bad Request")
    srv.wait_log(r"malformed HTTP request: HPE_")


@pytest.mark.parametrize("value", [b"a\x00b", b"a\rb"], ids=["nul", "bare-cr"])
def test_control_bytes_in_a_header(srv, value):
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + value + b"\r\n\r\n"
    assert reject_exchange(srv, data) == (400, b"Bad Request")
    srv.wait_log(r"malformed HTTP request: HPE_")


@pytest.mark.parametrize("data", [b"GET /\r\n", b"GET /\r\n\r\n", b"GET /predictions\n"])
def test_http09_is_refused_at_once(srv, data):
    # llhttp would take it as HTTP/0.9 and wait for headers forever
    assert reject_exchange(srv, data) == (400, b"HTTP/0.9 is not supported")
    srv.wait_log(r"rejected request: 400 HTTP/0.9 request line")


def test_http2_preface(srv):
    data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    assert reject_exchange(srv, data) == (400, b"Bad Request")
    srv.wait_log(r"HTTP/2 connection preface")


def test_url_over_the_limit(srv):
    data = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert reject_exchange(srv, data) == (414, b"")
    srv.wait_log(r"rejected request: 414 url over limit")


def test_too_many_headers(srv):
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n"
    assert reject_exchange(srv, data) == (431, b"")
    srv.wait_log(r"rejected request: 431 too many headers")


def test_headers_too_large(srv):
    data = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    assert reject_exchange(srv, data) == (431, b"")
    srv.wait_log(r"rejected request: 431 headers over limit")


def test_error_answer_survives_a_body_still_being_sent(srv):
    """413 on Content-Length while the client goes on sending: the answer is read, not lost
    to a reset (the server half-closes and drops input before it closes)."""
    with connect(srv) as s:
        s.sendall(b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 200000000\r\n\r\n")
        try:
            s.sendall(b"x" * (4 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = Reader(s)
        status, headers, body = r.response()
        assert (status, body) == (413, TOO_LARGE)
        assert r.closed()


# ---- bodies the JSON parser refuses (the connection stays usable: the HTTP was fine) ----


def test_invalid_utf8_in_a_json_body(srv):
    body = b'{"input":{"text":"a\xff\xfeb"}}'
    with connect(srv) as s:
        s.sendall(post("/predictions", body))
        status, headers, text = Reader(s).response()
    assert status == 400
    assert text.startswith(b"Failed to parse the request body as JSON: invalid unicode code point"), text
    srv.wait_log(r"Failed to parse the request body as JSON")


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udc00", rb"\ud800\u0041"])
def test_lone_surrogates_in_a_json_body(srv, escape):
    body = b'{"input":{"text":"' + escape + b'"}}'
    with connect(srv) as s:
        s.sendall(post("/predictions", body))
        status, headers, text = Reader(s).response()
    assert status in (400, 422), (status, text)
    assert text.startswith(b"Failed to parse the request body as JSON: "), text
    assert b"escape" in text or b"surrogate" in text, text


def test_json_nested_very_deep_is_an_error(srv):
    deep = b"[" * 200000 + b"]" * 200000
    with connect(srv) as s:
        s.sendall(post("/predictions", b'{"input":{"text":' + deep + b"}}"))
        status, headers, text = Reader(s).response()
    assert status in (400, 422), (status, text[:200])
    assert text.startswith(b"Failed to parse the request body as JSON"), text[:200]
    assert alive(srv)


# ---- deadlines ----


def assert_closed_with(sock, status, body):
    r = Reader(sock)
    got = r.response()
    assert (got[0], got[2]) == (status, body), got
    assert r.closed()


def test_header_deadline_partial_headers(fast):
    with connect(fast) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert_closed_with(s, 408, b"Timed out reading the request headers")
    fast.wait_log(r"rejected request: 408 request headers not received within 1 s")


def test_header_deadline_new_connection_that_sends_nothing(fast):
    with connect(fast) as s:
        assert_closed_with(s, 408, b"Timed out reading the request headers")


def test_header_deadline_is_not_extended_by_a_trickle(fast):
    """A header a byte at a time: the deadline runs from the first byte, not the last."""
    with connect(fast) as s:
        s.settimeout(0.1)
        data = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
        got = b""
        deadline = time.time() + BOUND
        for byte in data:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = s.recv(4096)
                got += chunk
                if not chunk or b"\r\n\r\n" in got:
                    break
            except socket.timeout:
                pass
            assert time.time() < deadline, "never cut off"
        assert got.startswith(b"HTTP/1.1 408 "), got


def test_many_slow_clients_are_all_cut_off(fast):
    socks = [connect(fast) for _ in range(100)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nX")
        for s in socks:
            assert_closed_with(s, 408, b"Timed out reading the request headers")
    finally:
        for s in socks:
            s.close()


def test_body_deadline_without_progress(fast):
    with connect(fast) as s:
        s.sendall(b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"input\":")
        assert_closed_with(s, 408, b"Timed out reading the request body")
    fast.wait_log(r"rejected request: 408 no request body received for 1 s")


def test_body_that_keeps_arriving_is_not_cut(make_server):
    """The body deadline is on progress: a body slower than the deadline in total but never
    silent for long is read."""
    srv = make_server(code=ECHO, env={"COGLET_HTTP_BODY_TIMEOUT": "2"})
    body = json.dumps({"input": {"text": "slow body"}}).encode()
    with connect(srv) as s:
        head = post("/predictions", body)[:-len(body)]
        s.sendall(head)
        for i in range(len(body)):  # ~3 s in all, 0.1 s between bytes
            s.sendall(body[i:i + 1])
            time.sleep(0.1)
        status, headers, text = Reader(s).response()
    assert status == 200, text
    assert json.loads(text)["output"] == "slow body"


def test_idle_keep_alive_connection_is_closed(fast):
    with connect(fast) as s:
        s.sendall(raw_request("GET", "/"))
        r = Reader(s)
        assert r.response()[0] == 200
        assert r.closed()  # quietly: no answer is owed


def test_sync_prediction_is_not_cut_by_the_deadlines(make_server):
    srv = make_server(code=ECHO, env=FAST)
    with connect(srv) as s:
        s.sendall(post("/predictions", b'{"input":{"text":"held","sleep":3}}'))
        status, headers, text = Reader(s).response()
    assert status == 200
    assert json.loads(text)["status"] == "succeeded"
    assert json.loads(text)["output"] == "held"


def test_sse_stream_is_not_cut_by_the_deadlines(fast):
    with connect(fast) as s:
        s.sendall(post("/predictions", b'{"input":{"n":3,"pause":1.5}}', b"Accept: text/event-stream\r\n"))
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk, "stream cut off: %r" % data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK"), data[:200]
    assert b"chunk 2" in data and b"event: completed" in data, data


def test_bad_timeout_values_fall_back_with_a_warning(make_server):
    srv = make_server(code=ECHO, env={"COGLET_HTTP_IDLE_TIMEOUT": "soon", "COGLET_HTTP_MAX_UNSENT": "-1"})
    srv.wait_log(r"Invalid COGLET_HTTP_IDLE_TIMEOUT value, using 120")
    srv.wait_log(r"Invalid COGLET_HTTP_MAX_UNSENT value, using 4194304")
    assert alive(srv)


# ---- back-pressure ----


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_pipelined_requests_never_read_do_not_grow_the_server(make_server):
    """18 MiB of pipelined GETs, the answers never read: the server stops reading once a
    few MiB are unsent, so its memory stays put; then every answer arrives, in order."""
    env = None
    if SANITIZED:  # ASan's quarantine keeps freed memory resident: make it reuse it
        env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1"}
    srv = make_server(code=ECHO, env=env)
    pair = raw_request("GET", "/") + raw_request("GET", "/nope")  # 200, 404, 200, 404, ...
    n = (18 << 20) // len(pair)
    data = pair * n
    before = rss_mib(srv.proc.pid)
    s = connect(srv)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(1)
    sent = 0
    deadline = time.time() + BOUND
    while sent < len(data) and time.time() < deadline:
        try:
            sent += s.send(data[sent:sent + (1 << 20)])
        except socket.timeout:
            break  # a second without progress: the server has stopped reading, the point
    peak = rss_mib(srv.proc.pid)
    assert peak - before < 64, "server grew %.1f -> %.1f MiB with %d bytes sent" % (before, peak, sent)
    assert sent < len(data), "the server read all %d bytes without the answers being read" % sent

    errors = []

    def send_rest():
        nonlocal sent
        try:
            while sent < len(data):
                sent += s.send(data[sent:sent + (1 << 20)])
        except OSError as e:
            errors.append(e)

    s.settimeout(BOUND)
    t = threading.Thread(target=send_rest)
    t.start()
    # the answers' status lines, in order: 200, 404, 200, ... (counted on the fly: 35 MiB)
    seen, carry, checked = 0, b"", 0
    while seen < 2 * n:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            raise AssertionError("answer %d of %d never came" % (seen, 2 * n))
        assert chunk, "closed after %d answers" % seen
        buf = carry + chunk
        last = buf.rfind(b"HTTP/1.1 ")
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", buf[:last] if last > 0 else b"")
        if last > 0:
            carry = buf[last:]
        else:
            carry = buf
        for st in statuses:
            want = b"200" if seen % 2 == 0 else b"404"
            assert st == want, "answer %d out of order: %r" % (seen, st)
            seen += 1
        if seen - checked > 20000:
            checked = seen
            assert rss_mib(srv.proc.pid) - before < 64
        if seen == 2 * n - 1 and carry.startswith(b"HTTP/1.1 404 "):
            seen += 1  # the last answer: nothing follows it
    t.join()
    s.close()
    assert not errors, errors
    assert rss_mib(srv.proc.pid) - before < 64


# ---- connection limits and file descriptors ----


def test_connections_over_the_limit_get_503(make_server):
    srv = make_server(code=ECHO, env={"COGLET_HTTP_MAX_CONNECTIONS": "5"})
    srv.session.close()  # its keep-alive connection would count
    held = []
    try:
        deadline = time.time() + BOUND
        while len(held) < 5:  # each one in gets answers (once the session's is gone)
            s = connect(srv)
            s.sendall(raw_request("GET", "/"))
            if Reader(s).response()[0] == 200:
                held.append(s)
            else:
                s.close()
                assert time.time() < deadline, "only %d connections got in" % len(held)
                time.sleep(0.05)
        with connect(srv) as extra:
            extra.sendall(raw_request("GET", "/"))
            status, headers, body = Reader(extra).response()
            assert (status, body) == (503, b"Too many open connections")
            assert headers["connection"] == "close"
        srv.wait_log(r"connection limit reached \(5 open, COGLET_HTTP_MAX_CONNECTIONS=5\)")
        held[0].sendall(post("/predictions", b'{"input":{"text":"still served"}}'))
        status, headers, text = Reader(held[0]).response()
        assert status == 200 and json.loads(text)["output"] == "still served"
        held.pop().close()
        deadline = time.time() + BOUND
        while True:  # the closed one's place is free again once the server has seen it go
            with connect(srv) as again:
                again.sendall(raw_request("GET", "/"))
                if Reader(again).response()[0] == 200:
                    break
            assert time.time() < deadline, "the freed place never came back"
            time.sleep(0.05)
    finally:
        for s in held:
            s.close()


def limited_launcher(nofile):
    code = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d)); "
            "os.execv(sys.executable, [sys.executable, '-m', 'coglet'] + sys.argv[1:])" % (nofile, nofile))
    return [sys.executable, "-c", code, "predict.py:Predictor", "--port", "0", "--host", "127.0.0.1"]


def raise_own_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip("this process may open only %d files" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def flood(srv, count):
    socks = []
    for _ in range(count):
        s = connect(srv)
        s.sendall(raw_request("GET", "/"))
        socks.append(s)
    return socks


def outcomes(socks):
    seen = {}
    for s in socks:
        try:
            status = Reader(s).response()[0]
        except (EOFError, ConnectionResetError):
            status = "closed"
        seen[status] = seen.get(status, 0) + 1
        s.close()
    return seen


def test_fd_limit_flood_sheds_and_a_prediction_still_succeeds(make_server):
    """1,024 fds and 2,000 clients: connections past what the fd limit leaves get 503, and
    a prediction on a connection opened before, whose file output the server must open,
    succeeds."""
    raise_own_fd_limit(2300)
    srv = make_server(code=FILE_OUTPUT, launcher=limited_launcher(1024))
    with connect(srv) as first:
        first.sendall(raw_request("GET", "/"))
        r = Reader(first)
        assert r.response()[0] == 200
        socks = flood(srv, 2000)
        try:
            first.sendall(post("/predictions", b'{"input":{"text":"hello"}}'))
            status, headers, text = r.response()
            assert status == 200
            body = json.loads(text)
            assert body["status"] == "succeeded", body
            assert body["output"] == "data:text/plain;base64,aGVsbG8=", body
        finally:
            seen = outcomes(socks)
    assert set(seen) <= {200, 503}, seen
    assert seen.get(503, 0) > 0 and seen.get(200, 0) > 0, seen
    srv.wait_log(r"connection limit reached")
    assert alive(srv)


def test_out_of_fds_at_accept_sheds_and_the_server_goes_on(make_server):
    """The fd limit lowered under the running server, so accept itself fails: new
    connections are closed, an existing one still gets its prediction."""
    raise_own_fd_limit(1300)
    srv = make_server(code=ECHO)
    with connect(srv) as first:
        first.sendall(raw_request("GET", "/"))
        r = Reader(first)
        assert r.response()[0] == 200
        hard = resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (200, hard))
        socks = flood(srv, 1000)
        try:
            first.sendall(post("/predictions", b'{"input":{"text":"still here"}}'))
            status, headers, text = r.response()
            assert status == 200 and json.loads(text)["output"] == "still here", text
        finally:
            seen = outcomes(socks)
            resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (1024, hard))
    assert seen.get("closed", 0) > 0, seen
    assert alive(srv)
