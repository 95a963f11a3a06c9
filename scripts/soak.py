#!/usr/bin/env python3
"""Soak: 20,000 predictions against real servers, then the question: did anything grow?

    .venv/bin/python scripts/soak.py [--predictions N] [--max-seconds S] [--json FILE]

`make soak` runs it (not part of CI). Two phases, each against a server of its own started
the way the tests start one (`coglet.server.serve()` in a subprocess, port 0): half the
predictions on a sync predictor (1 slot), half on an async one (4 slots, 4 clients). Each
mixes, by request number: sync predictions, failing predictors, 422s, printing predictions,
file outputs (data URLs), async predictions with webhooks (succeeding, failing, canceled),
idempotent PUTs, sync clients that hang up mid-prediction, and a 7 MiB input now and then
(spilled to a file). Webhooks go to a local receiver that counts terminal webhooks per id.

Printed for each phase at start (server ready, nothing run), warm (20%), middle (50%) and
end (100%): the parent's and the worker's resident memory, their open file descriptors,
and the files and directories under the server's prediction directory. It checks every
answer, that each async prediction got exactly one terminal webhook, that the server logged
no error, and that from warm to end nothing grew (memory within 8 MiB for the parent and
16 MiB for the worker, the parent's descriptors within 4, the rest not at all). Exit status
1 if any check failed. It stops by itself: --max-seconds (default 600) bounds the whole run.

Standard library only.
"""

import argparse
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

SYNC_PREDICTOR = """
import io
import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, mode: str = "ok", n: int = 0, text: str = "") -> object:
        if mode == "fail":
            raise ValueError("failing on purpose")
        if mode == "print":
            for i in range(n):
                print("line %d of %d" % (i, n))
        if mode == "file":
            f = io.BytesIO(b"soak file %d" % n)
            f.name = "out.txt"
            return f
        if mode == "slow":
            for _ in range(100):
                time.sleep(0.01)
        return "%s:%d:%d" % (mode, n, len(text))
"""

ASYNC_PREDICTOR = """
import asyncio
import io

from cog import BasePredictor


class Predictor(BasePredictor):
    async def predict(self, mode: str = "ok", n: int = 0, text: str = "") -> object:
        if mode == "fail":
            raise ValueError("failing on purpose")
        if mode == "print":
            for i in range(n):
                print("line %d of %d" % (i, n))
        if mode == "file":
            f = io.BytesIO(b"soak file %d" % n)
            f.name = "out.txt"
            return f
        if mode == "slow":
            await asyncio.sleep(1)
        return "%s:%d:%d" % (mode, n, len(text))
"""

LAUNCHER = """
import sys
from coglet import server
server.serve("predict.py:Predictor", host="127.0.0.1", port=0, output_temp_dir_base=sys.argv[1])
"""

BIG_TEXT = "b" * (7 << 20)  # over the 6 MiB spill threshold


# ---- measuring ----


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def files_and_dirs(root):
    files = dirs = 0
    for _, dnames, fnames in os.walk(root):
        dirs += len(dnames)
        files += len(fnames)
    return files, dirs


def children(ppid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == ppid and fields[0] not in ("Z", "X"):
                out.append(int(name))
    return out


# ---- the webhook receiver ----


class Hooks:
    def __init__(self):
        self.lock = threading.Lock()
        self.terminal = {}  # id -> [status, ...]
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if body.get("status") in ("succeeded", "failed", "canceled"):
                    with owner.lock:
                        owner.terminal.setdefault(body["id"], []).append(body["status"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


# ---- the server ----


class Server:
    def __init__(self, python, code, env, workdir):
        self.dir = workdir
        self.outputs = os.path.join(workdir, "predictions")
        os.makedirs(self.outputs, exist_ok=True)
        with open(os.path.join(workdir, "predict.py"), "w") as f:
            f.write(textwrap.dedent(code))
        full_env = dict(os.environ, COG_LOG_LEVEL="info", **env)
        self.proc = subprocess.Popen([python, "-c", LAUNCHER, self.outputs], cwd=workdir, env=full_env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.port = None
        self.errors = []
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(60):
            raise RuntimeError("server never printed its port")
        deadline = time.time() + 60
        while self.health().get("status") != "READY":
            if time.time() > deadline:
                raise RuntimeError("server never became READY")
            time.sleep(0.05)
        self.worker = children(self.proc.pid)[0]

    def _pump(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            if "Starting coglet server on" in line and self.port is None:
                self.port = int(line.split("Starting coglet server on ")[1].split(":")[1].split('"')[0])
                self._ready.set()
            elif '"level":"ERROR"' in line:
                self.errors.append(line.strip())

    def health(self):
        status, body = request(self.port, "GET", "/health-check")
        return json.loads(body) if status == 200 else {}

    def sample(self):
        files, dirs = files_and_dirs(self.outputs)
        return {"parent_rss": rss_mib(self.proc.pid), "worker_rss": rss_mib(self.worker),
                "parent_fds": open_fds(self.proc.pid), "worker_fds": open_fds(self.worker),
                "temp_files": files, "temp_dirs": dirs}

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            return self.proc.wait()


def request(port, method, path, body=None, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    c.request(method, path, body=data, headers=hdrs)
    r = c.getresponse()
    out = r.read()
    if conn is None:
        c.close()
    return r.status, out


# ---- the mix ----


class Client:
    """One client: its own keep-alive connection, request numbers i = start, start+step, ..."""

    def __init__(self, port, hooks, tally):
        self.port = port
        self.hooks = hooks
        self.tally = tally
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.async_ids = []

    def call(self, method, path, body=None, headers=None):
        while True:
            try:
                status, out = request(self.port, method, path, body, headers, conn=self.conn)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                self.tally.bump("reconnects")
                continue
            if status != 409:  # every slot busy: try again
                return status, out
            self.tally.bump("409 retried")
            time.sleep(0.002)

    def expect(self, ok, what):
        self.tally.bump(what if ok else "WRONG " + what)

    def sync(self, inp, want_status, want_output=None):
        status, out = self.call("POST", "/predictions", {"input": inp})
        body = json.loads(out) if status == 200 else {}
        ok = status == 200 and body.get("status") == want_status
        if want_output is not None:
            ok = ok and body.get("output") == want_output
        return ok, body

    def async_create(self, i, inp, put=False):
        pid = "soak-%d" % i
        body = {"input": inp, "webhook": self.hooks.url}
        if put:
            status, _ = self.call("PUT", "/predictions/" + pid, body, {"Prefer": "respond-async"})
        else:
            body["id"] = pid
            status, _ = self.call("POST", "/predictions", body, {"Prefer": "respond-async"})
        if status == 202:
            self.async_ids.append(pid)
        return status == 202, pid

    def hang_up(self, i):
        """A sync client that sends its request and leaves while the prediction runs."""
        while True:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            body = json.dumps({"id": "gone-%d" % i, "input": {"mode": "slow"}}).encode()
            s.sendall(b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            s.settimeout(0.05)
            try:
                head = s.recv(64)
            except socket.timeout:
                head = b""
            s.close()
            if b" 409 " not in head:
                return not head  # no answer yet: it was running when we left
            self.tally.bump("409 retried")
            time.sleep(0.002)

    def one(self, i):
        k = i % 20
        if i % 1000 == 50:
            ok, _ = self.sync({"mode": "ok", "text": BIG_TEXT}, "succeeded", "ok:0:%d" % len(BIG_TEXT))
            return self.expect(ok, "sync 7 MiB input")
        if k <= 6:
            ok, _ = self.sync({"mode": "ok", "n": i}, "succeeded", "ok:%d:0" % i)
            return self.expect(ok, "sync ok")
        if k == 7:
            ok, body = self.sync({"mode": "fail"}, "failed")
            return self.expect(ok and "failing on purpose" in body.get("error", ""), "sync failing predictor")
        if k == 8:
            status, _ = self.call("POST", "/predictions", {"input": {"n": "not a number"}})
            return self.expect(status == 422, "422")
        if k == 9:
            ok, body = self.sync({"mode": "print", "n": 50}, "succeeded")
            return self.expect(ok and body["logs"].count("\n") == 50, "sync printing")
        if k == 10:
            ok, body = self.sync({"mode": "file", "n": i}, "succeeded")
            return self.expect(ok and str(body.get("output", "")).startswith("data:"), "sync file output")
        if k in (11, 12):
            ok, _ = self.async_create(i, {"mode": "ok", "n": i})
            return self.expect(ok, "async + webhook")
        if k == 13:
            ok, _ = self.async_create(i, {"mode": "fail"})
            return self.expect(ok, "async failing + webhook")
        if k == 14:
            ok, pid = self.async_create(i, {"mode": "slow"})
            status, _ = self.call("POST", "/predictions/%s/cancel" % pid)
            return self.expect(ok and status in (200, 404), "async canceled + webhook")
        if k == 15:
            return self.expect(self.hang_up(i), "sync client hung up")
        if k == 16:
            ok, _ = self.async_create(i, {"mode": "ok", "n": i}, put=True)
            return self.expect(ok, "PUT + webhook")
        if k == 17:
            status, _ = self.call("GET", "/health-check")
            status2, _ = self.call("GET", "/")
            return self.expect(status == 200 and status2 == 200, "health + GET /")
        ok, _ = self.sync({"mode": "ok", "n": i, "text": "t" * 100000}, "succeeded", "ok:%d:100000" % i)
        return self.expect(ok, "sync 100 KB input")


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.done = 0

    def bump(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1


def run_phase(name, python, code, env, n, clients, deadline, workdir):
    hooks = Hooks()
    srv = Server(python, code, env, workdir)
    tally = Tally()
    rows = [("start", 0, srv.sample())]
    # warm: past the first big inputs, after which glibc's malloc keeps a 7 MiB-sized block
    # around instead of mapping and unmapping one each time (its mmap threshold grows with
    # the largest block freed): a one-time step, not growth
    marks = {n // 5: "warm", n // 2: "middle"}
    lock = threading.Lock()
    next_i = [0]
    workers = [Client(srv.port, hooks, tally) for _ in range(clients)]

    def loop(client):
        while True:
            with lock:
                i = next_i[0]
                if i >= n or time.time() > deadline:
                    return
                next_i[0] += 1
            client.one(i)
            with lock:
                tally.done += 1
                if tally.done in marks:
                    rows.append((marks[tally.done], tally.done, srv.sample()))

    threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in workers]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    # every async prediction ends, and its terminal webhook arrives
    async_ids = [pid for c in workers for pid in c.async_ids]
    settle = time.time() + 60
    while time.time() < settle:
        with hooks.lock:
            if all(pid in hooks.terminal for pid in async_ids):
                break
        time.sleep(0.1)
    time.sleep(1)  # a duplicate would arrive now
    while srv.health().get("status") not in ("READY",) and time.time() < settle:
        time.sleep(0.05)
    rows.append(("end", tally.done, srv.sample()))
    with hooks.lock:
        lost = [pid for pid in async_ids if pid not in hooks.terminal]
        dup = [pid for pid in async_ids if len(hooks.terminal.get(pid, [])) > 1]
        statuses = {}
        for pid in async_ids:
            for st in hooks.terminal.get(pid, [])[:1]:
                statuses[st] = statuses.get(st, 0) + 1
    rc = srv.stop()
    hooks.close()
    return {"name": name, "n": n, "rows": rows, "counts": tally.counts, "done": tally.done, "elapsed": elapsed,
            "async": len(async_ids), "webhooks_lost": len(lost), "webhooks_duplicated": len(dup),
            "webhook_statuses": statuses, "errors_logged": srv.errors, "exit_status": rc}


def flat(result):
    rows = {label: s for label, _, s in result["rows"]}
    warm, end = rows.get("warm"), rows.get("end")
    if not warm:
        return ["no warm sample (too few predictions)"]
    problems = []
    for key, slack in (("parent_rss", 8.0), ("worker_rss", 16.0)):
        if end[key] - warm[key] > slack:
            problems.append("%s grew %.1f MiB from warm to end" % (key, end[key] - warm[key]))
    # descriptors: connections come and go (clients, pooled webhook connections), a few
    # either way is noise; a leak grows with the work
    for key, slack in (("parent_fds", 4), ("worker_fds", 0), ("temp_files", 0), ("temp_dirs", 0)):
        if end[key] > warm[key] + slack:
            problems.append("%s grew from %d to %d" % (key, warm[key], end[key]))
    return problems


def print_result(result):
    print("\n== %s: %d predictions in %.0f s (%.0f/s) ==" % (
        result["name"], result["done"], result["elapsed"], result["done"] / max(result["elapsed"], 1e-9)))
    print("%-7s %7s %11s %11s %10s %10s %10s %9s" % (
        "point", "done", "parent MiB", "worker MiB", "parent fds", "worker fds", "temp files", "temp dirs"))
    for label, done, s in result["rows"]:
        print("%-7s %7d %11.1f %11.1f %10d %10d %10d %9d" % (
            label, done, s["parent_rss"], s["worker_rss"], s["parent_fds"], s["worker_fds"], s["temp_files"],
            s["temp_dirs"]))
    print("requests: " + ", ".join("%s %d" % kv for kv in sorted(result["counts"].items())))
    print("async predictions %d: terminal webhooks %s; lost %d, duplicated %d" % (
        result["async"], result["webhook_statuses"], result["webhooks_lost"], result["webhooks_duplicated"]))
    print("server: %d error lines logged, exit status %d" % (len(result["errors_logged"]), result["exit_status"]))
    for line in result["errors_logged"][:5]:
        print("  " + line[:300])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--predictions", type=int, default=20000)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    deadline = time.time() + args.max_seconds
    half = args.predictions // 2
    results = []
    with tempfile.TemporaryDirectory(prefix="coglet-soak-") as tmp:
        for name, code, env, clients, n in (
            ("sync predictor, 1 slot", SYNC_PREDICTOR, {}, 1, half),
            ("async predictor, 4 slots", ASYNC_PREDICTOR, {"COG_MAX_CONCURRENCY": "4"}, 4, args.predictions - half),
        ):
            workdir = os.path.join(tmp, str(len(results)))
            os.makedirs(workdir)
            results.append(run_phase(name, args.python, code, env, n, clients, deadline, workdir))
            print_result(results[-1])
    failures = []
    for r in results:
        failures += ["%s: %s" % (r["name"], p) for p in flat(r)]
        failures += ["%s: %d %s" % (r["name"], c, k) for k, c in r["counts"].items() if k.startswith("WRONG")]
        if r["webhooks_lost"] or r["webhooks_duplicated"]:
            failures.append("%s: webhooks lost or duplicated" % r["name"])
        if r["done"] < r["n"]:
            failures.append("%s: stopped at %d of %d predictions (--max-seconds)" % (r["name"], r["done"], r["n"]))
        if r["errors_logged"]:
            failures.append("%s: %d error lines logged" % (r["name"], len(r["errors_logged"])))
        if r["exit_status"] != 0:
            failures.append("%s: server exit status %d" % (r["name"], r["exit_status"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print("\n" + ("FLAT: nothing grew, every answer and webhook as expected" if not failures
                  else "NOT OK:\n  " + "\n  ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
