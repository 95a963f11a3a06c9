"""Runtime fidelity, files (docs/files.md): cog.Path / cog.File inputs from http URLs (a real
local file server) and data URIs, lists of them, Secret coercion, temp files removed after
success, failure and cancel; file outputs (Path, named file objects, lists and generators of
them) as data: URLs, or PUT to --upload-url (a real local upload target) with the Location
URL as output, retries on 5xx, a failing target failing the prediction, production order
kept, a 1 GiB upload with the parent's memory bounded; 50 MiB input and output strings
through the spill files, which are cleaned up."""

import base64
import hashlib
import http.server
import json
import os
import pathlib
import threading
import time

import pytest

from conftest import EXAMPLES, SANITIZED, SLOW

# ---------------------------------------------------------------------------------------
# a local file server and upload target
# ---------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        srv = self.server.owner
        with srv.lock:
            srv.gets.append(self.path)
            data = srv.files.get(self.path)
        if data is None:
            self._answer(404, b"not found")
        else:
            self._answer(200, data, {"Content-Type": "application/octet-stream"})

    def do_PUT(self):
        srv = self.server.owner
        name = self.path.rsplit("/", 1)[-1]
        length = int(self.headers.get("Content-Length") or 0)
        # read and discard, keeping only a count, a hash and both ends
        h = hashlib.sha256()
        head = b""
        tail = b""
        left = length
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
            h.update(chunk)
            if len(head) < 64:
                head += chunk[: 64 - len(head)]
            tail = (tail + chunk)[-64:]
        received = length - left
        with srv.lock:
            attempt = srv.attempts.get(name, 0) + 1
            srv.attempts[name] = attempt
        if name.startswith("slow"):
            time.sleep(1.0 * SLOW)
        if name.startswith("flaky") and attempt <= 2:
            status = 503
        elif name.startswith("broken"):
            status = 500
        else:
            status = 201
        rec = {"name": name, "path": self.path, "size": received, "sha256": h.hexdigest(), "head": head,
               "tail": tail, "type": self.headers.get("Content-Type"), "status": status, "attempt": attempt,
               "time": time.time()}
        with srv.lock:
            srv.puts.append(rec)
        headers = {}
        if status == 201 and not name.startswith("noloc"):
            headers["Location"] = "http://cdn.invalid/files/%s?token=secret-query" % name
        self._answer(status, b"{}", headers)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def handle_error(self, request, client_address):
        pass  # clients closing kept-alive connections


class FileServer:
    """GET serves `files` (path → bytes); PUT is an upload target that discards the body.
    Upload names decide the answer: `flaky*` 503 twice then 201, `broken*` always 500,
    `slow*` answers after a second, `noloc*` without Location."""

    def __init__(self):
        self.lock = threading.Lock()
        self.files = {}
        self.gets = []
        self.puts = []
        self.attempts = {}
        self._srv = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._srv.owner = self
        self.url = "http://127.0.0.1:%d" % self._srv.server_address[1]
        threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self._srv.shutdown()
        self._srv.server_close()

    def successful_puts(self):
        with self.lock:
            return [p for p in self.puts if p["status"] < 300]


@pytest.fixture(scope="module")
def fs():
    s = FileServer()
    yield s
    s.close()


# ---------------------------------------------------------------------------------------
# the predictor
# ---------------------------------------------------------------------------------------

PREDICTOR = """
import io
import json
import os
import pathlib
import sys
from typing import Any, List, Optional

import cog
from cog import File, Path, Secret

HERE = os.getcwd()


def record(where, value):
    if where:
        with open(where, "w") as f:
            json.dump(value, f)


def named(data, name):
    b = io.BytesIO(data)
    b.name = name
    return b


def out_file(name, data):
    p = os.path.join(HERE, "made", name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    return Path(p)


class Predictor:
    def predict(
        self,
        mode: str = "inputs",
        path: Optional[Path] = None,
        file: Optional[File] = None,
        paths: Optional[List[Path]] = None,
        files: Optional[List[File]] = None,
        secret: Optional[Secret] = None,
        plain: Optional[str] = None,
        record_to: str = "",
        names: Optional[List[str]] = None,
        text: str = "",
        size: int = 0,
    ) -> Any:
        seen = {}
        if path is not None:
            seen["path"] = str(path)
        if paths:
            seen["paths"] = [str(p) for p in paths]
        record(record_to, seen)
        if mode == "inputs":
            out = {}
            if path is not None:
                out["path"] = {"type": type(path).__name__, "is_cog_path": isinstance(path, cog.Path),
                               "exists": path.exists(), "content": path.read_text(), "name": path.name}
            if file is not None:
                data = file.read()
                out["file"] = {"content": data.decode() if isinstance(data, bytes) else data,
                               "is_iobase": isinstance(file, io.IOBase)}
            if paths is not None:
                out["paths"] = [[type(p).__name__, p.read_text()] for p in paths]
            if files is not None:
                out["files"] = [f.read().decode() for f in files]
            if secret is not None:
                print("secret is %s (%r)" % (secret, secret))
                print("secret length %d" % len(secret.get_secret_value()), file=sys.stderr)
                out["secret"] = {"type": type(secret).__name__, "module": type(secret).__module__,
                                 "value_hash": hash(secret.get_secret_value()) == hash(plain)}
            if plain is not None:
                out["plain_type"] = type(plain).__name__
            return out
        if mode == "fail":
            raise RuntimeError("failing after download")
        if mode == "busy":
            open(os.path.join(HERE, "busy-started"), "w").close()
            while True:
                pass
        if mode == "path_out":
            return out_file(names[0], text.encode())
        if mode == "bytesio_out":
            return named(text.encode(), names[0])
        if mode == "list_out":
            # a mix: Path, file object, plain value, file object
            return [out_file(names[0], b"first"), named(b"second", names[1]), "plain value",
                    named(b"fourth", names[2])]
        if mode == "gen_out":      # file objects
            def gen():
                for i, n in enumerate(names):
                    print("yielding %s" % n)
                    yield named(("content %d" % i).encode(), n)
            return gen()
        if mode == "gen_paths":    # cog.Path files, uploaded under their own names
            def gen_paths():
                for i, n in enumerate(names):
                    yield out_file(n, ("content %d" % i).encode())
            return gen_paths()
        if mode == "big_out":
            p = os.path.join(HERE, "made", names[0])
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(b"HEAD")
                f.truncate(size)          # sparse: fast to make, 1 GiB to upload
                f.seek(size - 4)
                f.write(b"TAIL")
            return Path(p)
        if mode == "echo":
            return text
        if mode == "len":
            return {"len": len(text), "prefix": text[:8]}
        if mode == "big_string":
            return "y" * size
        raise ValueError(mode)
"""


@pytest.fixture(scope="module")
def srv(make_module_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("downloads")
    s = make_module_server(code=PREDICTOR, env={"TMPDIR": str(tmp)})
    assert s.health()["status"] == "READY", s.log_text()
    s.tmp = tmp
    return s


@pytest.fixture(scope="module")
def up(make_module_server, fs):
    s = make_module_server(code=PREDICTOR, args=["--upload-url", fs.url + "/uploads"],
                           env={"COGLET_UPLOAD_RETRY_BASE": "0.05"})
    assert s.health()["status"] == "READY", s.log_text()
    return s


def predict(s, inp, **kw):
    r = s.predict(inp, **kw)
    assert r.status_code == 200, r.text[:2000]
    return r.json()


def ok(s, inp):
    body = predict(s, inp)
    assert body["status"] == "succeeded", body
    return body


def data_url(data, mime):
    return "data:%s;base64,%s" % (mime, base64.b64encode(data).decode())


def temp_names(s):
    return {p.name for p in pathlib.Path(s.tmp).iterdir()}


class no_new_temp_files:
    """Asserts that the block leaves no new file in the server's TMPDIR (downloads)."""

    def __init__(self, s):
        self.s = s

    def __enter__(self):
        self.before = temp_names(self.s)

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            left = sorted(temp_names(self.s) - self.before)
            assert left == [], "temp files left behind: %r" % left


def pred_dir_files(pred_id):
    """Files left under /tmp/coglet/predictions/{id} (inputs/ and outputs/)."""
    base = pathlib.Path("/tmp/coglet/predictions") / pred_id
    if not base.exists():
        return []
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------


def test_path_and_file_inputs_from_http_urls(srv, fs, tmp_path):
    fs.files["/in/hello.txt"] = b"hello from http"
    fs.files["/in/other%20name.txt"] = b"file via http"
    rec = tmp_path / "rec.json"
    with no_new_temp_files(srv):
        body = ok(srv, {"path": fs.url + "/in/hello.txt", "file": fs.url + "/in/other%20name.txt",
                        "record_to": str(rec)})
    out = body["output"]
    assert out["path"]["content"] == "hello from http"
    assert out["path"]["is_cog_path"] is True and out["path"]["exists"] is True
    assert out["path"]["name"].endswith("hello.txt")
    assert out["file"] == {"content": "file via http", "is_iobase": True}
    assert "/in/hello.txt" in fs.gets and "/in/other%20name.txt" in fs.gets
    # the download went to a temp file that is gone now
    downloaded = json.loads(rec.read_text())["path"]
    assert downloaded.startswith(str(srv.tmp)), downloaded
    assert not os.path.exists(downloaded)


def test_path_and_file_inputs_from_data_uris(srv, tmp_path):
    rec = tmp_path / "rec.json"
    with no_new_temp_files(srv):
        body = ok(srv, {"path": data_url(b"from a data uri", "text/plain"),
                        "file": data_url(b"data file", "application/octet-stream"), "record_to": str(rec)})
    assert body["output"]["path"]["content"] == "from a data uri"
    assert body["output"]["path"]["name"].endswith(".txt")
    assert body["output"]["file"]["content"] == "data file"
    assert not os.path.exists(json.loads(rec.read_text())["path"])


def test_lists_of_paths_and_files(srv, fs, tmp_path):
    fs.files["/in/a.txt"] = b"alpha"
    fs.files["/in/b.txt"] = b"beta"
    rec = tmp_path / "rec.json"
    with no_new_temp_files(srv):
        body = ok(srv, {"paths": [fs.url + "/in/a.txt", data_url(b"gamma", "text/plain"), fs.url + "/in/b.txt"],
                        "files": [fs.url + "/in/b.txt", data_url(b"delta", "text/plain")], "record_to": str(rec)})
    assert body["output"]["paths"] == [["Path", "alpha"], ["Path", "gamma"], ["Path", "beta"]]
    assert body["output"]["files"] == ["beta", "delta"]
    downloaded = json.loads(rec.read_text())["paths"]
    assert len(downloaded) == 3
    assert not any(os.path.exists(p) for p in downloaded)


def test_download_failure_fails_the_prediction(srv, fs):
    body = predict(srv, {"path": fs.url + "/in/missing.txt"})
    assert body["status"] == "failed", body
    assert body["error"].startswith("Input validation error: "), body
    assert "404" in body["error"]
    assert ok(srv, {"mode": "echo", "text": "next"})["output"] == "next"


def test_failed_download_leaves_no_temp_file(srv, fs):
    """The temp file a download was being written to goes too, and so do the finished
    downloads of the other items when one item of a list fails."""
    fs.files["/in/fine.txt"] = b"fine"
    with no_new_temp_files(srv):
        body = predict(srv, {"path": fs.url + "/in/missing.txt"})
        assert body["status"] == "failed", body
        body = predict(srv, {"paths": [fs.url + "/in/fine.txt", fs.url + "/in/missing-too.txt"]})
        assert body["status"] == "failed", body


def test_secret_input(srv):
    value = "sk-live-Zq81-never-log-me"
    body = ok(srv, {"secret": value, "plain": value})
    out = body["output"]
    assert out["secret"] == {"type": "Secret", "module": "cog.types", "value_hash": True}
    assert out["plain_type"] == "str"
    assert value not in body["logs"]
    assert "secret is ********** (Secret(**********))" in body["logs"]
    assert "secret length %d" % len(value) in body["logs"]
    srv.wait_log(r"secret length")
    assert value not in srv.log_text()


@pytest.mark.parametrize("outcome", ["failed", "canceled"])
def test_temp_inputs_removed_after_failure_and_cancel(srv, fs, tmp_path, outcome):
    fs.files["/in/doomed.txt"] = b"doomed"
    rec = tmp_path / "rec.json"
    started = pathlib.Path(srv.cwd, "busy-started")
    if started.exists():
        started.unlink()
    inp = {"mode": "fail" if outcome == "failed" else "busy", "record_to": str(rec),
           "path": fs.url + "/in/doomed.txt", "paths": [data_url(b"x", "text/plain"), fs.url + "/in/doomed.txt"]}
    pred_id = "tmp-%s" % outcome
    result = {}
    before = temp_names(srv)
    t = threading.Thread(target=lambda: result.update(r=srv.post("/predictions", {"id": pred_id, "input": inp})))
    t.start()
    if outcome == "canceled":
        deadline = time.time() + 15 * SLOW
        while not started.exists():
            assert time.time() < deadline, srv.log_text()
            time.sleep(0.01)
        seen = json.loads(rec.read_text())
        assert os.path.exists(seen["path"])  # there while the prediction runs
        assert srv.post("/predictions/%s/cancel" % pred_id).status_code == 200
    t.join(30 * SLOW)
    body = result["r"].json()
    assert body["status"] == outcome, body
    seen = json.loads(rec.read_text())
    for p in [seen["path"], *seen["paths"]]:
        assert not os.path.exists(p), p
    assert temp_names(srv) - before == set()


# ---------------------------------------------------------------------------------------
# outputs as data URLs
# ---------------------------------------------------------------------------------------


def test_path_output_is_data_url(srv):
    body = ok(srv, {"mode": "path_out", "names": ["result.txt"], "text": "path output"})
    assert body["output"] == data_url(b"path output", "text/plain")


def test_named_file_object_output_is_data_url(srv):
    body = ok(srv, {"mode": "bytesio_out", "names": ["pic.png"], "text": "not really a png"})
    assert body["output"] == data_url(b"not really a png", "image/png")
    assert pred_dir_files(body["id"]) == []


def test_list_of_files_and_values(srv):
    body = ok(srv, {"mode": "list_out", "names": ["l1.txt", "l2.json", "l3"]})
    assert body["output"] == [data_url(b"first", "text/plain"), data_url(b"second", "application/json"),
                              "plain value", data_url(b"fourth", "application/octet-stream")]
    assert pred_dir_files(body["id"]) == []


def test_generator_of_files(srv):
    body = ok(srv, {"mode": "gen_out", "names": ["g0.txt", "g1.txt", "g2.txt"]})
    assert body["output"] == [data_url(b"content %d" % i, "text/plain") for i in range(3)]
    assert body["logs"] == "yielding g0.txt\nyielding g1.txt\nyielding g2.txt\n"
    assert pred_dir_files(body["id"]) == []


# ---------------------------------------------------------------------------------------
# outputs uploaded
# ---------------------------------------------------------------------------------------


def test_path_output_uploaded_to_location(up, fs):
    body = ok(up, {"mode": "path_out", "names": ["up-one.txt"], "text": "uploaded text"})
    assert body["output"] == "http://cdn.invalid/files/up-one.txt"  # Location, query removed
    [put] = [p for p in fs.successful_puts() if p["name"] == "up-one.txt"]
    assert put["path"] == "/uploads/up-one.txt"
    assert put["head"] == b"uploaded text" and put["size"] == len(b"uploaded text")
    assert put["type"] == "text/plain"


def puts_since(fs, mark):
    with fs.lock:
        return [p for p in fs.puts[mark:] if p["status"] < 300]


def test_upload_without_location_uses_request_url(up, fs):
    body = ok(up, {"mode": "path_out", "names": ["noloc.json"], "text": "{}"})
    assert body["output"] == fs.url + "/uploads/noloc.json"


def test_file_object_output_uploaded(up, fs):
    """A file object is written to {output_dir}/{n}.{ext} by the worker
    (docs/files.md#outputs-in-the-worker), uploaded
    under that name, and the copy is deleted afterwards."""
    mark = len(fs.puts)
    body = ok(up, {"mode": "bytesio_out", "names": ["picture.png"], "text": "png bytes"})
    assert body["output"] == "http://cdn.invalid/files/0.png"
    [put] = puts_since(fs, mark)
    assert put["path"] == "/uploads/0.png" and put["head"] == b"png bytes" and put["type"] == "image/png"
    assert pred_dir_files(body["id"]) == []


def test_list_and_generator_outputs_uploaded(up, fs):
    mark = len(fs.puts)
    body = ok(up, {"mode": "list_out", "names": ["ul1.txt", "ul2.txt", "ul3.txt"]})
    # Path keeps its name; file objects are numbered per prediction; values stay inline
    assert body["output"] == ["http://cdn.invalid/files/ul1.txt", "http://cdn.invalid/files/1.txt",
                              "plain value", "http://cdn.invalid/files/2.txt"]
    got = {p["name"]: p["head"] for p in puts_since(fs, mark)}
    assert got == {"ul1.txt": b"first", "1.txt": b"second", "2.txt": b"fourth"}
    assert pred_dir_files(body["id"]) == []
    mark = len(fs.puts)
    body = ok(up, {"mode": "gen_out", "names": ["ug0.txt", "ug1.txt"]})
    assert body["output"] == ["http://cdn.invalid/files/0.txt", "http://cdn.invalid/files/1.txt"]
    got = {p["name"]: p["head"] for p in puts_since(fs, mark)}
    assert got == {"0.txt": b"content 0", "1.txt": b"content 1"}
    assert pred_dir_files(body["id"]) == []
    body = ok(up, {"mode": "gen_paths", "names": ["gp0.txt", "gp1.txt"]})
    assert body["output"] == ["http://cdn.invalid/files/gp0.txt", "http://cdn.invalid/files/gp1.txt"]


def test_upload_retried_on_5xx(up, fs):
    body = ok(up, {"mode": "path_out", "names": ["flaky-1.txt"], "text": "third time lucky"})
    assert body["output"] == "http://cdn.invalid/files/flaky-1.txt"
    attempts = [p for p in fs.puts if p["name"] == "flaky-1.txt"]
    assert [p["status"] for p in attempts] == [503, 503, 201]
    assert all(p["head"] == b"third time lucky" for p in attempts)  # the whole body every time


def test_upload_that_always_fails_fails_the_prediction(up, fs):
    body = predict(up, {"mode": "path_out", "names": ["broken-1.txt"], "text": "nowhere to go"})
    assert body["status"] == "failed", body
    assert "upload" in body["error"].lower(), body
    assert "broken-1.txt" in body["error"], body
    assert "output" not in body
    assert len([p for p in fs.puts if p["name"] == "broken-1.txt"]) >= 2  # it was retried
    # the server keeps working
    assert ok(up, {"mode": "echo", "text": "still fine"})["output"] == "still fine"


def test_uploaded_outputs_keep_production_order(up, fs):
    names = ["slow-first.txt", "fast-second.txt", "fast-third.txt"]
    body = ok(up, {"mode": "gen_paths", "names": names})
    assert body["output"] == ["http://cdn.invalid/files/" + n for n in names]
    done = {p["name"]: p["time"] for p in fs.successful_puts() if p["name"] in names}
    # the first really finished last, so the order is the production order, not completion's
    assert done["slow-first.txt"] > done["fast-second.txt"]
    assert done["slow-first.txt"] > done["fast-third.txt"]


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(key)


@pytest.mark.skipif(SANITIZED, reason="1 GiB upload under a sanitized build is too slow")
def test_one_gib_upload_with_bounded_parent_memory(up, fs):
    size = 1 << 30
    pid = up.proc.pid
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                samples.append(status_kib(pid, "VmRSS"))
            except (OSError, AssertionError):
                pass
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        r = up.predict({"mode": "big_out", "names": ["huge.bin"], "size": size}, timeout=60)
    finally:
        stop.set()
        t.join()
        big = os.path.join(up.cwd, "made", "huge.bin")
        if os.path.exists(big):
            os.unlink(big)
    body = r.json()
    assert body["status"] == "succeeded", body
    assert body["output"] == "http://cdn.invalid/files/huge.bin"
    [put] = [p for p in fs.successful_puts() if p["name"] == "huge.bin"]
    assert put["size"] == size
    assert put["head"].startswith(b"HEAD") and put["tail"].endswith(b"TAIL")
    assert put["type"] == "application/octet-stream"
    hwm = status_kib(pid, "VmHWM")
    assert samples and max(samples) < 64 * 1024, max(samples)
    assert hwm < 64 * 1024, "parent peak RSS %d KiB" % hwm


# ---------------------------------------------------------------------------------------
# payloads over the frame limit
# ---------------------------------------------------------------------------------------


def test_50_mib_string_round_trip(srv):
    """Input and output both over the 8 MiB frame limit: spilled to files and back."""
    text = "".join(chr(0x41 + i % 26) for i in range(1 << 16)) * 800  # 50 MiB, not one repeated byte
    r = srv.predict({"mode": "echo", "text": text}, timeout=120)
    body = r.json()
    assert body["status"] == "succeeded", str(body)[:300]
    assert len(body["output"]) == len(text)
    assert body["output"] == text
    assert pred_dir_files(body["id"]) == []


def test_50_mib_output_string(srv):
    size = 50 * 1024 * 1024
    body = ok(srv, {"mode": "big_string", "size": size})
    assert body["output"] == "y" * size
    assert pred_dir_files(body["id"]) == []


# ---------------------------------------------------------------------------------------
# the example
# ---------------------------------------------------------------------------------------


def test_example_files(make_server, fs):
    with open(os.path.join(EXAMPLES, "files.py")) as f:
        code = f.read()
    s = make_server(code=code, args=["--upload-url", fs.url + "/uploads/"])
    assert s.health()["status"] == "READY", s.log_text()
    fs.files["/in/doc.txt"] = b"make me loud"
    mark = len(fs.puts)
    body = ok(s, {"document": fs.url + "/in/doc.txt", "copies": 2})
    # file objects are uploaded as {n}.{ext of their name}
    assert body["output"] == ["http://cdn.invalid/files/0.txt", "http://cdn.invalid/files/1.txt"]
    assert body["logs"].startswith("read 12 characters from ")
    assert sorted((p["name"], p["head"], p["type"]) for p in puts_since(fs, mark)) == [
        ("0.txt", b"MAKE ME LOUD", "text/plain"), ("1.txt", b"MAKE ME LOUD", "text/plain")]
    body = ok(s, {"document": data_url(b"tiny", "text/plain")})
    assert body["output"] == ["http://cdn.invalid/files/0.txt"]
