#!/usr/bin/env python3
"""Benchmarks: coglet in C ("ours") against Replicate's coglet 0.23.1 ("the anchor").

    python benchmarks/run.py [--rounds N] [--quick] [--only SCENARIO[,SCENARIO...]]
    python benchmarks/run.py --only model      # the real model (PyTorch, ~1.5 GB venvs, not in CI)

Every scenario runs on ours and on the anchor alternately (ours, anchor, ours, anchor, ...),
once per round. Both servers are started the same way: the cog SDK's launcher
`python -m cog.server.http --host 127.0.0.1` with PORT and COG_PREDICT_TYPE_STUB set, the
server's venv first on PATH (the anchor spawns its worker as the `python` first on PATH), and
the predictor's directory as cwd. Ours comes from /work/main/.venv (built by `make build`),
the anchor from benchmarks/.venv-anchor (made by setup_anchor.sh, which this script runs).

The load generator is wrk (Debian package `wrk`) for the request-rate scenarios and small
Python clients for the big-payload and SSE ones. Everything runs on this machine; with two or
more CPUs the servers (parent and worker) are pinned to all CPUs but the last, the load
generator and this script to the last one (--no-pin turns that off).

Writes benchmarks/results/latest.json and PNG plots in benchmarks/results/ (matplotlib from
benchmarks/.venv-tools). A full run (not --quick, no --only) also refreshes the results table
in docs/benchmarks.md between its bench-table markers (--no-docs to skip).

The `queue` group (pull mode, benchmarks/queue_bench.py) compares ours with cog 0.6.1's Redis
queue worker instead (benchmarks/.venv-queue-anchor); it needs redis-server.

Standard library only; any python3 can run it.
"""

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import free_port, logger, proc_status

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PRED = os.path.join(HERE, "predictors")
RESULTS = os.path.join(HERE, "results")
LUA = os.path.join(HERE, "wrk_count.lua")
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
VENVS = {
    "ours": os.environ.get("BENCH_OURS_VENV", os.path.join(ROOT, ".venv")),
    "anchor": os.environ.get("BENCH_ANCHOR_VENV", os.path.join(HERE, ".venv-anchor")),
}
TOOLS_VENV = os.path.join(HERE, ".venv-tools")
# the real-model scenario (`--only model`): PyTorch + all-MiniLM-L6-v2 in each server's venv
MODEL_VENVS = {"ours": os.path.join(HERE, ".venv-model-ours"), "anchor": os.path.join(HERE, ".venv-model-anchor")}
MODEL_TEXT = "A sentence to embed: coglet serves a real model, and the worker must not make it slower."
ORDER = ("ours", "anchor")
MIB = 1024 * 1024
FILE_BYTES = 64 * MIB
JSON_BYTES = 20 * MIB
SSE_CHUNKS = 1000

# wrk_s/short_s/schema_s: seconds of wrk load; warm_s: wrk warm-up seconds; warm_n: untimed requests
# before the timed ones in the Python-client scenarios; *_n: timed requests per server per round.
FULL = dict(rounds=3, wrk_s=5, short_s=3, warm_s=1, warm_n=1, startups=3, sse_n=10, file_n=3, json_n=5, schema_s=1,
            schema_bursts=4, model_warm=5, model_n=60, model_tput_s=5, model_clients=4, queue_quick=False)
QUICK = dict(rounds=3, wrk_s=1, short_s=1, warm_s=0, warm_n=0, startups=1, sse_n=3, file_n=1, json_n=1, schema_s=1,
             schema_bursts=2, model_warm=2, model_n=20, model_tput_s=2, model_clients=4, queue_quick=True)

GROUPS = ("startup", "sync", "async8", "sse", "file64", "json20", "schema50", "queue")
EXTRA_GROUPS = ("model",)  # large downloads: only with --only
ALIASES = {
    "latency": "sync",
    "rss": "sync",
    "floor": "sync",
    "transport": "sync",
    "health": "sync",
    "async": "async8",
    "file": "file64",
    "upload": "file64",
    "json": "json20",
    "schema": "schema50",
    "pull": "queue",
}

# metric -> (title, unit, better, goal description)
METRICS = {
    "sync_rps": ("sync no-op, 1 keep-alive connection", "req/s", "higher",
                 "≥ 4× the anchor, 0 non-2xx, ≥ 70% of our `GET /`"),
    "async8_rps": ("async no-op, COG_MAX_CONCURRENCY=8, 8 connections", "req/s", "higher",
                   "≥ 10× the anchor and ≥ our sync no-op"),
    "sync_p50_us": ("latency p50, 1 connection", "µs", "lower", "reported"),
    "sync_p99_us": ("latency p99, 1 connection", "µs", "lower", "p99 ≤ 2× our p50 and ≤ our p50 + 100 µs"),
    "startup_s": ("process start → READY (trivial predictor)", "s", "lower", "≤ 0.5× the anchor"),
    "startup_native_s": ("process start → READY, ours via `python -m coglet` (vs the anchor's cog launcher)", "s",
                         "lower", "reported"),
    "startup_native_coglet_ms": ("start → READY (our `Server ready` line) via `python -m coglet`: coglet's own share "
                                 "(all but importing the predictor and its setup())", "ms", "lower", "≤ 30 ms"),
    "rss_idle_mib": ("parent RSS idle", "MiB", "lower", "≤ 10 MiB (net of the launcher)"),
    "rss_idle_native_mib": ("parent RSS idle, ours via `python -m coglet`", "MiB", "lower", "reported"),
    "rss_load_mib": ("parent RSS under load (sync, peak)", "MiB", "lower", "≤ 10 MiB (net of the launcher)"),
    "rss_async_load_mib": ("parent RSS under load (async ×8, peak)", "MiB", "lower", "≤ 10 MiB (net of the launcher)"),
    "worker_rss_idle_mib": ("worker RSS idle", "MiB", "lower", "reported"),
    "sse_s": ("generator of 1,000 chunks over SSE, end to end", "s", "lower", "≥ 2× the anchor"),
    "file64_datauri_s": ("64 MiB file output as data: URI", "s", "lower", "≥ 2× the anchor"),
    "file64_datauri_hwm_mib": ("parent peak RSS, 64 MiB data: URI", "MiB", "lower", "≤ 128 MiB (2× the file)"),
    "file64_upload_s": ("64 MiB file output uploaded", "s", "lower", "≥ 2× the anchor"),
    "file64_upload_hwm_mib": ("parent peak RSS, 64 MiB upload", "MiB", "lower", "≤ 128 MiB (2× the file)"),
    "json20_s": ("20 MiB JSON input", "s", "lower", "≥ 2× the anchor"),
    "json20_hwm_mib": ("parent peak RSS, 20 MiB JSON input", "MiB", "lower", "reported"),
    "schema50_with_us": ("50-field input with schema, p50 latency", "µs", "lower", "reported"),
    "schema50_without_us": ("50-field input without schema, p50 latency", "µs", "lower", "reported"),
    "schema50_cost_us": ("schema validation cost per request (with − without)", "µs", "lower", "reported"),
    "cpu_sync_parent_us": ("CPU per request, sync: parent (409s included)", "µs", "lower", "reported"),
    "cpu_sync_worker_us": ("CPU per request, sync: worker (409s included)", "µs", "lower", "reported"),
    "cpu_async_parent_us": ("CPU per request, async ×8: parent (409s included)", "µs", "lower", "reported"),
    "cpu_async_worker_us": ("CPU per request, async ×8: worker (409s included)", "µs", "lower", "reported"),
    "health_rps": ("GET /health-check, 1 connection (HTTP-stack floor)", "req/s", "higher", "reported"),
    "root_rps": ("GET /, 1 connection (HTTP-stack floor, no worker)", "req/s", "higher", "reported"),
    # pull mode (benchmarks/queue_bench.py): the anchor is cog 0.6.1's queue worker, not coglet 0.23.1
    "queue_drain_pps": ("pull: 1 consumer drains no-op predictions, a webhook each (anchor: cog 0.6.1)", "pred/s",
                        "higher", "≥ 20× the anchor"),
    "queue_floor_pps": ("pull: the drain's floor, a bare C loop with our process layout and traffic, webhooks "
                        "by hand (benchmarks/queue_floor.c; anchor column: its drain again)", "pred/s", "higher",
                        "reported (the floor)"),
    "queue_floor_curl_pps": ("pull: the same floor with its webhooks sent by libcurl (anchor column: its drain "
                             "again)", "pred/s", "higher", "reported (the floor with libcurl)"),
    "queue_start_p50_us": ("pull: XADD → start webhook, p50", "µs", "lower", "p50 ≤ 1 ms"),
    "queue_start_p99_us": ("pull: XADD → start webhook, p99", "µs", "lower", "reported"),
    "queue_fleet1_pps": ("pull: 1 consumer on one stream (not pinned)", "pred/s", "higher", "reported"),
    "queue_fleet2_pps": ("pull: 2 consumers on one stream (not pinned)", "pred/s", "higher", "reported"),
    "queue_fleet4_pps": ("pull: 4 consumers on one stream (not pinned)", "pred/s", "higher", "reported"),
    "queue_rss_mib": ("pull: parent RSS while draining (peak)", "MiB", "lower", "reported"),
    # the real-model scenario (--only model)
    "model_p50_ms": ("MiniLM embedding, sequential latency p50", "ms", "lower",
                     "≤ in-process p50 × 1.05 + 0.5 ms"),
    "model_p99_ms": ("MiniLM embedding, sequential latency p99", "ms", "lower", "reported"),
    "model_predict_time_ms": ("MiniLM embedding, predict_time as the server reports it (median)", "ms", "lower",
                              "reported"),
    "model_inproc_p50_ms": ("MiniLM embedding in a plain process, on the thread that ran setup() (p50)", "ms",
                            "lower", "reported (the floor)"),
    "model_inproc_thread_p50_ms": ("MiniLM embedding in a plain process, from a second thread (p50)", "ms", "lower",
                                   "reported"),
    "model_rps": ("MiniLM embedding, throughput with 4 clients", "req/s", "higher", "reported"),
    "model_startup_s": ("MiniLM: process start → READY", "s", "lower", "reported"),
    "model_rss_parent_mib": ("MiniLM: parent RSS after the load", "MiB", "lower", "reported"),
    "model_rss_worker_mib": ("MiniLM: worker RSS after the load", "MiB", "lower", "reported"),
}
SPEEDUP_GOALS = {"sync_rps": 4, "async8_rps": 10, "startup_s": 2, "sse_s": 2, "file64_datauri_s": 2,
                 "file64_upload_s": 2, "json20_s": 2, "queue_drain_pps": 20}
NO_RATIO = {"schema50_cost_us"}  # a difference of two timings: a ratio of those means nothing
RSS_NET_GOALS = {"rss_idle_mib": 10, "rss_load_mib": 10, "rss_async_load_mib": 10}
ABS_GOALS = {"file64_datauri_hwm_mib": 2 * FILE_BYTES / MIB, "file64_upload_hwm_mib": 2 * FILE_BYTES / MIB}


log = logger("bench")


# ---------------------------------------------------------------- processes ---------------


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU time the parent and the worker spend during a load, per request answered."""

    def __init__(self, server):
        self.pids = [server.proc.pid] + children(server.proc.pid)[:1]
        self.start = [cpu_seconds(p) for p in self.pids]

    def per_request_us(self, requests):
        out = []
        for pid, t0 in zip(self.pids, self.start):
            t1 = cpu_seconds(pid)
            out.append((t1 - t0) * 1e6 / requests if t0 is not None and t1 is not None and requests else None)
        while len(out) < 2:
            out.append(None)
        return out


def children(pid):
    try:
        kids = []
        for tid in os.listdir("/proc/%d/task" % pid):  # a child may belong to any thread
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(x) for x in f.read().split()]
        return kids
    except OSError:
        pass
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                if int(st.rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return kids


class ServerError(Exception):
    pass


def note_key(line):
    """A log line without its timestamp and ids, so that repeats of one event count as one note."""
    try:
        d = json.loads(line)
        f = dict(d.get("fields") or {})
        msg = f.pop("message", "")
        for k in ("slot", "slot_id", "prediction_id", "id"):
            f.pop(k, None)
        return "%s %s: %s%s" % (d.get("level"), d.get("target"), msg, (" " + json.dumps(f, sort_keys=True)) if f else "")
    except (ValueError, AttributeError):
        return re.sub(r"pred_[0-9a-f]+", "pred_…", line.strip())[:300]


class Server:
    """One server process (ours or the anchor) serving one predictor directory."""

    def __init__(self, ctx, kind, pred_dir, env=None, upload_url=None, tag="", launcher="cog", venv=None):
        self.ctx = ctx
        self.venv = venv or VENVS[kind]
        self.launcher = launcher
        self.kind = kind
        self.pred_dir = pred_dir
        self.extra_env = env or {}
        self.upload_url = upload_url
        self.tag = tag
        self.proc = None
        self.port = None
        self.logf = None
        self.log_path = None
        self.version = None
        self.pinned = True
        self.t0_wall = None

    def env(self):
        venv = self.venv
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update({k: v for k, v in self.ctx.server_env.items()})
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env["VIRTUAL_ENV"] = venv
        env["PORT"] = str(self.port)
        env["COG_PREDICT_TYPE_STUB"] = "predict.py:Predictor"
        env.update(self.extra_env)
        return env

    def start(self, timeout=90):
        """Starts the server; returns seconds from spawn to the first READY health check."""
        venv = self.venv
        self.port = free_port()
        if self.launcher == "coglet":  # ours only: its own launcher, which does not import cog
            cmd = [os.path.join(venv, "bin", "python"), "-m", "coglet", "predict.py:Predictor", "--host", "127.0.0.1",
                   "--port", str(self.port)]
        else:
            cmd = [os.path.join(venv, "bin", "python"), "-m", "cog.server.http", "--host", "127.0.0.1"]
        if self.upload_url:
            cmd += ["--upload-url", self.upload_url]
        self.log_path = os.path.join(self.ctx.logdir, "%s-%s-%d.log" % (self.kind, self.tag or "srv", self.ctx.next_id()))
        self.logf = open(self.log_path, "wb")
        cpus = self.ctx.server_cpus if self.pinned else set(self.ctx.all_cpus)
        pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.t0_wall = time.time()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.pred_dir, env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=pre)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError("%s exited with %s before READY; log %s:\n%s"
                                  % (self.kind, self.proc.returncode, self.log_path, self.log_tail()))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/health-check")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200:
                    doc = json.loads(body)
                    st = doc.get("status")
                    if st == "READY":
                        t = time.perf_counter() - t0
                        self.version = doc.get("version")
                        return t
                    if st in ("SETUP_FAILED", "DEFUNCT", "UNHEALTHY"):
                        raise ServerError("%s health %s: %s" % (self.kind, st, json.dumps(doc)[:2000]))
            except (ConnectionError, OSError, http.client.HTTPException, ValueError):
                pass
            if time.perf_counter() > deadline:
                raise ServerError("%s not READY after %ss; log %s:\n%s" % (self.kind, timeout, self.log_path, self.log_tail()))
            time.sleep(0.002)

    def log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def rss(self):
        return proc_status(self.proc.pid)

    def worker_rss(self):
        kids = children(self.proc.pid)
        return proc_status(kids[0]) if kids else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log("%s did not exit 10 s after SIGTERM; killing it" % self.kind)
                self.ctx.odd("%s: did not exit within 10 s of SIGTERM (%s)" % (self.kind, self.tag))
                self.proc.kill()
                self.proc.wait()
        elif rc not in (0, -signal.SIGTERM):
            self.ctx.odd("%s: server exited with %s during %s (log %s)" % (self.kind, rc, self.tag, self.log_path))
        # the worker exits on EOF of its control channel; reap anything left in our session
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.logf.close()
        self.scan_log()
        self.proc = None

    def scan_log(self):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return
        for line in text.splitlines():
            low = line.lower()
            if '"level":"error"' in low or '"level":"warn"' in low or "traceback" in low or "panicked" in low \
                    or "segmentation" in low or "error:" in low[:12]:
                if "deprecat" in low or "no schema file" in low:
                    continue
                if self.tag == "schema50-with" and ("input rejected" in low or "validation" in low):
                    continue  # the one invalid request grp_schema50 sends on purpose
                self.ctx.odd("%s [%s]: %s" % (self.kind, re.sub(r"-\d+$", "", self.tag), note_key(line)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class RssSampler(threading.Thread):
    """Peak VmRSS of the parent and the worker while a load runs (sampled every 50 ms)."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.stop_ev = threading.Event()
        self.parent_peak = 0.0
        self.worker_peak = 0.0

    def run(self):
        kids = children(self.server.proc.pid)
        wpid = kids[0] if kids else None
        while not self.stop_ev.is_set():
            st = proc_status(self.server.proc.pid)
            if st and st["VmRSS"]:
                self.parent_peak = max(self.parent_peak, st["VmRSS"])
            if wpid:
                st = proc_status(wpid)
                if st and st["VmRSS"]:
                    self.worker_peak = max(self.worker_peak, st["VmRSS"])
            self.stop_ev.wait(0.05)

    def finish(self):
        self.stop_ev.set()
        self.join()
        return self.parent_peak, self.worker_peak


# ---------------------------------------------------------------- load ---------------------


def run_wrk(ctx, port, path, seconds, conns, method="GET", body_file=None, expect=None):
    env = dict(os.environ)
    env["BENCH_METHOD"] = method
    env["BENCH_BODY_FILE"] = body_file or ""
    env["BENCH_EXPECT"] = expect or ""
    cmd = ["wrk", "-t", "1", "-c", str(conns), "-d", "%ds" % max(1, int(round(seconds))), "--timeout", "10s",
           "-s", LUA, "http://127.0.0.1:%d%s" % (port, path)]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=seconds + 60)
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            res = json.loads(line[len("BENCH_JSON "):])
            secs = res["duration_us"] / 1e6
            res["rps_ok"] = res["ok"] / secs if secs > 0 else 0.0
            res["rps_all"] = res["requests"] / secs if secs > 0 else 0.0
            return res
    raise RuntimeError("wrk gave no result (rc %s): %s %s" % (p.returncode, p.stdout[-500:], p.stderr[-500:]))


def tally_wrk(rec, key, res):
    """Adds a wrk result's failures to the record's counters."""
    c = rec.setdefault("counts", {}).setdefault(key, {"ok": 0, "non2xx": 0, "unexpected": 0, "socket_errors": 0, "statuses": {}})
    c["ok"] += res["ok"]
    c["non2xx"] += res["non2xx"]
    c["unexpected"] += res["unexpected"]
    e = res["errors"]
    c["socket_errors"] += e["connect"] + e["read"] + e["write"] + e["timeout"]
    for k, v in res["statuses"].items():
        c["statuses"][k] = c["statuses"].get(k, 0) + v


def tally(rec, key, ok, status=None, what=None):
    c = rec.setdefault("counts", {}).setdefault(key, {"ok": 0, "non2xx": 0, "unexpected": 0, "socket_errors": 0, "statuses": {}})
    if ok:
        c["ok"] += 1
    elif status is not None and not (200 <= status < 300):
        c["non2xx"] += 1
        c["statuses"][str(status)] = c["statuses"].get(str(status), 0) + 1
    elif status is None:
        c["socket_errors"] += 1
    else:
        c["unexpected"] += 1
    if not ok and what:
        rec.setdefault("failures", []).append("%s: %s" % (key, what[:300]))


def dechunk(data):
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        j = data.find(b"\r\n", i)
        if j < 0:
            break
        size = int(data[i:j].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[j + 2:j + 2 + size]
        i = j + 2 + size + 2
    return bytes(out)


def sse_once(port):
    """One SSE prediction; returns (seconds, status, n_output_events, completed_ok, n_error_events)."""
    body = b'{"input":{}}'
    req = (b"POST /predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
           b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    t0 = time.perf_counter()
    s.sendall(req)
    while True:
        d = s.recv(1 << 18)
        if not d:
            break
        buf += d
        if buf.endswith(b"\r\n0\r\n\r\n"):
            break
    t = time.perf_counter() - t0
    s.close()
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return t, None, 0, False, 0
    if b"transfer-encoding: chunked" in head.lower():
        rest = dechunk(rest)
    n_out = rest.count(b"event: output\n")
    n_err = rest.count(b"event: error\n")
    tail = rest.split(b"event: completed\n", 1)
    ok = len(tail) == 2 and b'"status":"succeeded"' in tail[1]
    return t, status, n_out, ok, n_err


def post(conn, path, body, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    t0 = time.perf_counter()
    conn.request("POST", path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    return time.perf_counter() - t0, r.status, data


def new_conn(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


# ---------------------------------------------------------------- scenario groups -----------
# Each takes (ctx, kind) and returns a record: {"values": {metric: [samples]}, "counts": {...}}.


def grp_startup(ctx, kind):
    rec = {"values": {"startup_s": []}}
    srv = Server(ctx, kind, os.path.join(PRED, "sync_noop"), tag="startup")
    try:
        t = srv.start()
        rec["values"]["startup_s"].append(t)
        ctx.versions[kind] = srv.version
    finally:
        srv.stop()
    if kind == "ours":
        # ours also has `python -m coglet`, which does not import the cog SDK in the parent;
        # with debug logs, whose timestamps give the phases of its start-up
        srv = Server(ctx, kind, os.path.join(PRED, "sync_noop"), tag="startup-native", launcher="coglet",
                     env={"COG_LOG_LEVEL": "debug"})
        try:
            total = srv.start()
            rec["values"]["startup_native_s"] = [total]
            time.sleep(0.3)
            rec["values"]["rss_idle_native_mib"] = [srv.rss()["VmRSS"]]
        finally:
            srv.stop()
        phases = startup_phases(srv.log_path, srv.t0_wall, total)
        if phases:
            rec["startup_phases_ms"] = phases
            rec["values"]["startup_native_coglet_ms"] = [phases["coglet_ms"]]
    return rec


# the log lines that end each start-up phase (parent: coglet::*, worker: coglet::worker)
PHASE_LINES = (("parent_started", "coglet "), ("worker_started", "Worker spawned"),
               ("worker_connected", "Connected to slot transport"), ("loading_predictor", "Loading predictor"),
               ("predictor_loaded", "Predictor loaded"), ("setup_done", "Predictor setup done"),
               ("ready", "Server ready"))


def startup_phases(log_path, t0_wall, total_s):
    """Milliseconds from Popen to each phase's log line, and coglet's own share: everything
    but importing the predictor (Loading predictor → Predictor loaded) and its setup()."""
    import datetime

    at = {}
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    d = json.loads(line)
                    msg = d["fields"]["message"]
                    ts = datetime.datetime.strptime(d["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
                except (ValueError, KeyError, TypeError):
                    continue
                t = (ts.replace(tzinfo=datetime.timezone.utc).timestamp() - t0_wall) * 1e3
                for name, prefix in PHASE_LINES:
                    if name not in at and msg.startswith(prefix):
                        at[name] = round(t, 2)
    except OSError:
        return None
    if len(at) != len(PHASE_LINES):
        return None
    at["health_ready"] = round(total_s * 1e3, 2)
    at["predictor_import_ms"] = round(at["predictor_loaded"] - at["loading_predictor"], 2)
    at["setup_ms"] = round(at["setup_done"] - at["predictor_loaded"], 2)
    # to READY as our own log line says it (the client's 2 ms health-check poll is reported
    # apart, in coglet_to_health_ms)
    at["coglet_ms"] = round(at["ready"] - at["predictor_import_ms"] - at["setup_ms"], 2)
    at["coglet_to_health_ms"] = round(at["health_ready"] - at["predictor_import_ms"] - at["setup_ms"], 2)
    return at


def grp_sync(ctx, kind):
    cfg = ctx.cfg
    v = {}
    rec = {"values": v}
    body = ctx.body_file("empty", b'{"input":{}}')
    with Server(ctx, kind, os.path.join(PRED, "sync_noop"), tag="sync") as srv:
        srv.start()
        time.sleep(0.3)
        st, wst = srv.rss(), srv.worker_rss()
        v["rss_idle_mib"] = [st["VmRSS"]]
        if wst:
            v["worker_rss_idle_mib"] = [wst["VmRSS"]]
        if cfg["warm_s"]:
            run_wrk(ctx, srv.port, "/predictions", cfg["warm_s"], 1, "POST", body, '"status":"succeeded"')
        sampler = RssSampler(srv)
        sampler.start()
        cpu = CpuMeter(srv)
        res = run_wrk(ctx, srv.port, "/predictions", cfg["wrk_s"], 1, "POST", body, '"status":"succeeded"')
        pcpu, wcpu = cpu.per_request_us(res["requests"])
        peak, wpeak = sampler.finish()
        v["cpu_sync_parent_us"] = [pcpu]
        v["cpu_sync_worker_us"] = [wcpu]
        tally_wrk(rec, "sync", res)
        v["sync_rps"] = [res["rps_ok"]]
        rec["sync_attempted_rps"] = res["rps_all"]
        v["sync_p50_us"] = [res["lat_us"]["p50"]]
        v["sync_p99_us"] = [res["lat_us"]["p99"]]
        v["rss_load_mib"] = [peak]
        res = run_wrk(ctx, srv.port, "/health-check", cfg["short_s"], 1, "GET", None, '"status":"READY"')
        tally_wrk(rec, "health", res)
        v["health_rps"] = [res["rps_ok"]]
        res = run_wrk(ctx, srv.port, "/", cfg["short_s"], 1, "GET", None, "predictions_url")
        tally_wrk(rec, "root", res)
        v["root_rps"] = [res["rps_ok"]]
        if not srv.alive():
            raise ServerError("%s died during the sync scenario" % kind)
    return rec


def grp_async8(ctx, kind):
    cfg = ctx.cfg
    v = {}
    rec = {"values": v}
    body = ctx.body_file("empty", b'{"input":{}}')
    with Server(ctx, kind, os.path.join(PRED, "async_noop"), env={"COG_MAX_CONCURRENCY": "8"}, tag="async8") as srv:
        srv.start()
        if cfg["warm_s"]:
            run_wrk(ctx, srv.port, "/predictions", cfg["warm_s"], 8, "POST", body, '"status":"succeeded"')
        sampler = RssSampler(srv)
        sampler.start()
        cpu = CpuMeter(srv)
        res = run_wrk(ctx, srv.port, "/predictions", cfg["wrk_s"], 8, "POST", body, '"status":"succeeded"')
        pcpu, wcpu = cpu.per_request_us(res["requests"])
        peak, _ = sampler.finish()
        v["cpu_async_parent_us"] = [pcpu]
        v["cpu_async_worker_us"] = [wcpu]
        tally_wrk(rec, "async8", res)
        v["async8_rps"] = [res["rps_ok"]]
        v["rss_async_load_mib"] = [peak]
        rec["async8_latency_us"] = res["lat_us"]
        if not srv.alive():
            raise ServerError("%s died during the async scenario" % kind)
    return rec


def grp_sse(ctx, kind):
    cfg = ctx.cfg
    v = {"sse_s": []}
    rec = {"values": v}
    with Server(ctx, kind, os.path.join(PRED, "sse_gen"), tag="sse") as srv:
        srv.start()
        for i in range(cfg["warm_n"] + cfg["sse_n"]):
            try:
                t, status, n_out, ok, n_err = sse_once(srv.port)
            except OSError as e:
                tally(rec, "sse", False, None, repr(e))
                continue
            good = status == 200 and ok and n_out == SSE_CHUNKS and n_err == 0
            tally(rec, "sse", good, status, "status %s, %d output events, %d error events, completed ok=%s"
                  % (status, n_out, n_err, ok))
            if good and i >= cfg["warm_n"]:
                v["sse_s"].append(t)
    return rec


def grp_file64(ctx, kind):
    cfg = ctx.cfg
    v = {"file64_datauri_s": [], "file64_upload_s": []}
    rec = {"values": v}
    body = b'{"input":{}}'
    with Server(ctx, kind, os.path.join(PRED, "file_out"), tag="file64-datauri") as srv:
        srv.start()
        c = new_conn(srv.port)
        for i in range(cfg["warm_n"] + cfg["file_n"]):
            try:
                t, status, data = post(c, "/predictions", body)
            except (OSError, http.client.HTTPException) as e:
                tally(rec, "file64_datauri", False, None, repr(e))
                c = new_conn(srv.port)
                continue
            good = (status == 200 and b'"status":"succeeded"' in data and b'"output":"data:' in data
                    and len(data) > FILE_BYTES * 4 // 3)
            tally(rec, "file64_datauri", good, status, "status %s, %d bytes: %r" % (status, len(data), data[:200]))
            if good and i >= cfg["warm_n"]:
                v["file64_datauri_s"].append(t)
            del data
        c.close()
        v["file64_datauri_hwm_mib"] = [srv.rss()["VmHWM"]]
    sink = ctx.upload_sink_url
    with Server(ctx, kind, os.path.join(PRED, "file_out"), upload_url=sink + "/", tag="file64-upload") as srv:
        srv.start()
        c = new_conn(srv.port)
        for i in range(cfg["warm_n"] + cfg["file_n"]):
            before = ctx.sink_stats()
            try:
                t, status, data = post(c, "/predictions", body)
            except (OSError, http.client.HTTPException) as e:
                tally(rec, "file64_upload", False, None, repr(e))
                c = new_conn(srv.port)
                continue
            after = ctx.sink_stats()
            got = after["bytes"] - before["bytes"]
            good = (status == 200 and b'"status":"succeeded"' in data and b'"output":"http://127.0.0.1' in data
                    and got == FILE_BYTES)
            tally(rec, "file64_upload", good, status, "status %s, sink got %d bytes: %r" % (status, got, data[:300]))
            if good and i >= cfg["warm_n"]:
                v["file64_upload_s"].append(t)
        c.close()
        v["file64_upload_hwm_mib"] = [srv.rss()["VmHWM"]]
    return rec


def grp_json20(ctx, kind):
    cfg = ctx.cfg
    v = {"json20_s": []}
    rec = {"values": v}
    body = ctx.json20_body
    want = b'"output":%d' % JSON_BYTES
    with Server(ctx, kind, os.path.join(PRED, "json_in"), tag="json20") as srv:
        srv.start()
        c = new_conn(srv.port)
        for i in range(cfg["warm_n"] + cfg["json_n"]):
            try:
                t, status, data = post(c, "/predictions", body)
            except (OSError, http.client.HTTPException) as e:
                tally(rec, "json20", False, None, repr(e))
                c = new_conn(srv.port)
                continue
            good = status == 200 and b'"status":"succeeded"' in data and want in data
            tally(rec, "json20", good, status, "status %s: %r" % (status, data[:300]))
            if good and i >= cfg["warm_n"]:
                v["json20_s"].append(t)
        c.close()
        v["json20_hwm_mib"] = [srv.rss()["VmHWM"]]
    return rec


def grp_schema50(ctx, kind):
    """Two servers of the same 50-parameter predictor, one with .cog/openapi_schema.json (so the
    input is validated) and one without, up at the same time; short wrk bursts alternate between
    them. The cost is the difference of their median p50 latencies (p50: robust against the
    scheduling noise of a shared machine; the mean-based difference is kept in extra)."""
    cfg = ctx.cfg
    v = {}
    rec = {"values": v}
    body = ctx.body_file("fields50", ctx.fields50_body)
    srv = {"with": Server(ctx, kind, os.path.join(PRED, "fields50"), tag="schema50-with"),
           "without": Server(ctx, kind, ctx.fields50_noschema_dir, tag="schema50-without")}
    try:
        for s in srv.values():
            s.start()
        # the schema must really be enforced: a wrong type is a 422 on both servers
        c = new_conn(srv["with"].port)
        _, status, data = post(c, "/predictions", ctx.fields50_bad_body)
        c.close()
        rec["rejects_invalid"] = status == 422
        if status != 422:
            rec.setdefault("failures", []).append("schema50: an invalid input got %s: %r" % (status, data[:200]))
        if cfg["warm_s"]:
            for s in srv.values():
                run_wrk(ctx, s.port, "/predictions", cfg["warm_s"], 1, "POST", body, '"status":"succeeded"')
        p50 = {"with": [], "without": []}
        mean = {"with": [], "without": []}
        for _ in range(cfg["schema_bursts"]):
            for tag in ("with", "without"):
                res = run_wrk(ctx, srv[tag].port, "/predictions", cfg["schema_s"], 1, "POST", body,
                              '"status":"succeeded"')
                tally_wrk(rec, "schema50_" + tag, res)
                if res["ok"]:
                    p50[tag].append(res["lat_us"]["p50"])
                    mean[tag].append(1e6 / res["rps_ok"])
        for tag in ("with", "without"):
            if p50[tag]:
                v["schema50_%s_us" % tag] = [statistics.median(p50[tag])]
        if p50["with"] and p50["without"]:
            v["schema50_cost_us"] = [statistics.median(p50["with"]) - statistics.median(p50["without"])]
            rec["schema50_mean_us"] = {"with": statistics.median(mean["with"]),
                                       "without": statistics.median(mean["without"])}
        for s in srv.values():
            if not s.alive():
                raise ServerError("%s died during the schema scenario" % kind)
    finally:
        for s in srv.values():
            s.stop()
    return rec


def grp_queue(ctx, kind):
    """Pull mode; queue_bench.py has the scenarios. The anchor here is cog 0.6.1's queue worker."""
    import queue_bench

    cfg = queue_bench.QUICK if ctx.cfg.get("queue_quick") else queue_bench.FULL
    return {"values": queue_bench.run_group(kind, cfg, ctx.logdir, ctx.server_cpus, ctx.load_cpus)}


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100.0 * len(xs)))] if xs else None


def inproc_model(ctx, kind):
    """The in-process floor in this server's model venv, with the CPUs the model server gets."""
    cpus = ctx.server_cpus if ctx.model_pinned else set(ctx.all_cpus)
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([os.path.join(MODEL_VENVS[kind], "bin", "python"), os.path.join(HERE, "inproc_model.py"),
                          os.path.join(PRED, "minilm"), MODEL_TEXT, str(ctx.cfg["model_n"])], capture_output=True,
                         text=True, timeout=600, preexec_fn=pre, cwd="/", env=env)
    if out.returncode != 0:
        raise RuntimeError("inproc_model.py failed: " + out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_throughput(port, clients, seconds, body):
    """Successful predictions per second with `clients` keep-alive connections, each sending
    its next request when the last one answered; a 409 (busy: one slot) is retried after
    1 ms and counted."""
    stop = time.perf_counter() + seconds
    counts = {"ok": 0, "busy": 0, "other": 0}
    lock = threading.Lock()

    def client():
        c = new_conn(port)
        while time.perf_counter() < stop:
            try:
                _, status, data = post(c, "/predictions", body)
            except (OSError, http.client.HTTPException):
                c = new_conn(port)
                status, data = None, b""
            key = "ok" if status == 200 and b'"status":"succeeded"' in data else ("busy" if status == 409 else "other")
            with lock:
                counts[key] += 1
            if status == 409:
                time.sleep(0.001)
        c.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    counts["rps"] = counts["ok"] / (time.perf_counter() - t0)
    return counts


def grp_model(ctx, kind):
    """A real model, sentence embeddings (benchmarks/predictors/minilm), in each server's own
    model venv (benchmarks/setup_model.sh): in-process floor, start → READY, sequential
    latency and predict_time, throughput with 4 clients, RSS."""
    cfg = ctx.cfg
    v = {}
    rec = {"values": v}
    floor = inproc_model(ctx, kind)
    v["model_inproc_p50_ms"] = [floor["setup_thread"]["p50_ms"]]
    v["model_inproc_thread_p50_ms"] = [floor["other_thread"]["p50_ms"]]
    rec["model_torch_threads"] = floor["torch_threads"]
    body = json.dumps({"input": {"text": MODEL_TEXT}}).encode()
    srv = Server(ctx, kind, os.path.join(PRED, "minilm"), env={"HF_HUB_OFFLINE": "1"}, tag="model",
                 venv=MODEL_VENVS[kind])
    srv.pinned = ctx.model_pinned
    with srv:
        v["model_startup_s"] = [srv.start(timeout=300)]
        c = new_conn(srv.port)
        lat, ptime = [], []
        i = busy = 0
        while i < cfg["model_warm"] + cfg["model_n"]:
            try:
                t, status, data = post(c, "/predictions", body)
            except (OSError, http.client.HTTPException) as e:
                tally(rec, "model", False, None, repr(e))
                c = new_conn(srv.port)
                i += 1
                continue
            if status == 409 and busy < 10000:  # the anchor frees its slot after answering
                busy += 1
                time.sleep(0.001)
                continue
            i += 1
            doc = json.loads(data) if status == 200 else {}
            out = doc.get("output")
            good = status == 200 and doc.get("status") == "succeeded" and isinstance(out, list) and len(out) == 384
            tally(rec, "model", good, status, "status %s: %r" % (status, data[:300]))
            if good and i >= cfg["model_warm"]:
                lat.append(t * 1e3)
                ptime.append(doc["metrics"]["predict_time"] * 1e3)
        c.close()
        rec["model_sequential_409"] = busy
        v["model_p50_ms"] = [_pct(lat, 50)]
        v["model_p99_ms"] = [_pct(lat, 99)]
        v["model_predict_time_ms"] = [statistics.median(ptime) if ptime else None]
        res = model_throughput(srv.port, cfg["model_clients"], cfg["model_tput_s"], body)
        v["model_rps"] = [res["rps"]]
        rec["model_throughput"] = res
        time.sleep(0.3)
        st, wst = srv.rss(), srv.worker_rss()
        v["model_rss_parent_mib"] = [st["VmRSS"]]
        v["model_rss_worker_mib"] = [wst["VmRSS"] if wst else None]
        if not srv.alive():
            raise ServerError("%s died during the model scenario" % kind)
    return rec


GROUP_FNS = {"model": grp_model, "startup": grp_startup, "sync": grp_sync, "async8": grp_async8, "sse": grp_sse,
             "file64": grp_file64, "json20": grp_json20, "schema50": grp_schema50,
             "queue": grp_queue}


# ---------------------------------------------------------------- context -------------------


class Ctx:
    def __init__(self, cfg, pin):
        self.cfg = cfg
        self.tmp = tempfile.mkdtemp(prefix="coglet-bench-")
        self.logdir = os.path.join(self.tmp, "logs")
        os.makedirs(self.logdir)
        self._id = 0
        self._bodies = {}
        self.oddities = {}  # note -> count
        self.versions = {}
        self.server_env = {"BENCH_FILE_DIR": self.tmp}  # where predictors/file_out writes its file
        cpus = sorted(os.sched_getaffinity(0))
        if pin and len(cpus) >= 2:
            self.server_cpus = set(cpus[:-1])
            self.load_cpus = {cpus[-1]}
            os.sched_setaffinity(0, self.load_cpus)  # this script, wrk and the clients inherit it
        else:
            self.server_cpus = None
            self.load_cpus = None
        self.all_cpus = cpus
        self.model_pinned = False  # the model servers get every CPU (torch's thread pool)
        # payloads
        self.json20_body = b'{"input":{"text":"' + b"a" * JSON_BYTES + b'"}}'
        fields = {}
        for i in range(50):
            t = i % 4
            fields["f%02d" % i] = ["hello", 12345, 3.25, True][t]
        self.fields50_body = json.dumps({"input": fields}, separators=(",", ":")).encode()
        bad = dict(fields)
        bad["f01"] = "not an integer"
        self.fields50_bad_body = json.dumps({"input": bad}).encode()
        self.fields50_noschema_dir = os.path.join(self.tmp, "fields50_noschema")
        os.makedirs(self.fields50_noschema_dir)
        shutil.copy(os.path.join(PRED, "fields50", "predict.py"), self.fields50_noschema_dir)
        self.sink = None
        self.upload_sink_url = None

    def next_id(self):
        self._id += 1
        return self._id

    def odd(self, msg):
        if msg not in self.oddities:
            log("note: " + msg)
        self.oddities[msg] = self.oddities.get(msg, 0) + 1

    def body_file(self, name, data):
        if name not in self._bodies:
            p = os.path.join(self.tmp, name + ".json")
            with open(p, "wb") as f:
                f.write(data)
            self._bodies[name] = p
        return self._bodies[name]

    def start_sink(self):
        port = free_port()
        self.sink = subprocess.Popen([sys.executable, os.path.join(HERE, "upload_sink.py"), str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.sink.stdout.readline()
        self.upload_sink_url = "http://127.0.0.1:%d" % port

    def sink_stats(self):
        c = http.client.HTTPConnection("127.0.0.1", int(self.upload_sink_url.rsplit(":", 1)[1]), timeout=10)
        c.request("GET", "/stats")
        d = json.loads(c.getresponse().read())
        c.close()
        return d

    def close(self):
        for name in os.listdir(self.tmp):  # the 64 MiB output file and the request bodies
            if name.endswith((".bin", ".json", ".tmp")):
                try:
                    os.unlink(os.path.join(self.tmp, name))
                except OSError:
                    pass
        if self.sink:
            self.sink.terminate()
            try:
                self.sink.wait(5)
            except subprocess.TimeoutExpired:
                self.sink.kill()
                self.sink.wait()


# ---------------------------------------------------------------- baselines -----------------


def build_stamp(kind):
    """Hash of the server's native extension: tells whether a venv got a different build during a
    run (a reinstall of the same build does not count)."""
    import glob
    import hashlib
    h = hashlib.sha1()
    for p in sorted(glob.glob(os.path.join(VENVS[kind], "lib", "python*", "site-packages", "coglet", "_impl*.so"))):
        try:
            with open(p, "rb") as f:
                h.update(f.read())
        except OSError:
            return None
    return h.hexdigest()


def launcher_baseline_mib(kind, native=False):
    """VmRSS of the launcher's interpreter with what it imports before serve() is called
    (native: ours' `python -m coglet`, which imports argparse and coglet but not cog)."""
    imports = "argparse, re, coglet" if native else "argparse, enum, runpy, coglet, cog.server, cog"
    code = ("import %s\n"
            "import re\n"
            "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n" % imports)
    vals = []
    for _ in range(3):
        out = subprocess.run([os.path.join(VENVS[kind], "bin", "python"), "-c", code], cwd="/", capture_output=True,
                             text=True, timeout=60)
        if out.returncode == 0:
            vals.append(int(out.stdout.strip()) / 1024.0)
    return statistics.median(vals) if vals else None


def inproc_floor(ctx):
    cpus = ctx.server_cpus
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run([os.path.join(VENVS["ours"], "bin", "python"), os.path.join(HERE, "inproc.py"),
                          os.path.join(PRED, "sync_noop"), "20000"], capture_output=True, text=True, timeout=120,
                         preexec_fn=pre, cwd="/")
    if out.returncode != 0:
        raise RuntimeError("inproc.py failed: " + out.stderr[-1000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- summary -------------------


def summarize(samples_by_round):
    flat = [x for r in samples_by_round for x in r if x is not None]
    if not flat:
        return None
    per_round = [statistics.median(r) for r in samples_by_round if r]
    return {"median": statistics.median(flat), "min": min(flat), "max": max(flat), "n": len(flat),
            "round_medians": per_round, "samples": samples_by_round}


def build_summary(ctx, raw, floor, baselines, groups_run):
    out = {}
    for metric, (title, unit, better, goal) in METRICS.items():
        entry = {"title": title, "unit": unit, "better": better, "goal": goal}
        have = False
        for kind in ORDER:
            rounds = raw.get(metric, {}).get(kind)
            if rounds is not None:
                entry[kind] = summarize(rounds)
                have = True
        if not have:
            continue
        o, a = entry.get("ours"), entry.get("anchor")
        if metric == "startup_native_s" and o and raw.get("startup_s", {}).get("anchor"):
            a = summarize(raw["startup_s"]["anchor"])  # compared with the anchor's only launcher
        if metric in NO_RATIO:
            a = None
        if o and a and a["median"] and o["median"]:
            entry["ratio"] = o["median"] / a["median"]  # ours / anchor, as measured
            entry["speedup"] = entry["ratio"] if better == "higher" else 1.0 / entry["ratio"]
            rr = []
            for ro, ra in zip(o["round_medians"], a["round_medians"]):
                if ro and ra:
                    rr.append(ro / ra if better == "higher" else ra / ro)
            if rr:
                entry["speedup_round_min"] = min(rr)
                entry["speedup_round_max"] = max(rr)
        if metric in SPEEDUP_GOALS and "speedup" in entry:
            entry["goal_met"] = entry["speedup"] >= SPEEDUP_GOALS[metric]
        if metric in RSS_NET_GOALS:
            for kind in ORDER:
                if entry.get(kind) and baselines.get(kind) is not None:
                    entry[kind]["net_median"] = entry[kind]["median"] - baselines[kind]
                    entry[kind]["net_max"] = entry[kind]["max"] - baselines[kind]
            if entry.get("ours") and "net_median" in entry["ours"]:
                entry["goal_met"] = entry["ours"]["net_max"] <= RSS_NET_GOALS[metric]
                entry["goal_met_absolute"] = entry["ours"]["max"] <= RSS_NET_GOALS[metric]
        if metric == "rss_idle_native_mib" and entry.get("ours") and baselines.get("ours_native") is not None:
            entry["ours"]["net_median"] = entry["ours"]["median"] - baselines["ours_native"]
            entry["ours"]["net_max"] = entry["ours"]["max"] - baselines["ours_native"]
        if metric in ABS_GOALS and entry.get("ours"):
            entry["goal_met"] = entry["ours"]["max"] <= ABS_GOALS[metric]
        if metric == "queue_start_p50_us" and entry.get("ours"):
            entry["goal_met"] = entry["ours"]["median"] <= 1000
        if metric == "sync_p99_us" and entry.get("ours") and floor:
            fl = statistics.median(f["p99_us"] for f in floor)
            entry["floor_p99_us"] = fl
            entry["ours_overhead_us"] = entry["ours"]["median"] - fl
            if entry.get("anchor"):
                entry["anchor_overhead_us"] = entry["anchor"]["median"] - fl
            p50 = summarize(raw["sync_p50_us"]["ours"]) if raw.get("sync_p50_us", {}).get("ours") else None
            if p50:
                entry["ours_p50_us"] = p50["median"]
                entry["goal_met"] = (entry["ours"]["median"] <= 2 * p50["median"]
                                     and entry["ours"]["median"] <= p50["median"] + 100)
        if metric == "sync_p50_us" and entry.get("ours") and floor:
            fl = statistics.median(f["p50_us"] for f in floor)
            entry["floor_p50_us"] = fl
            entry["ours_overhead_us"] = entry["ours"]["median"] - fl
            if entry.get("anchor"):
                entry["anchor_overhead_us"] = entry["anchor"]["median"] - fl
        out[metric] = entry
    if "startup_native_coglet_ms" in out and out["startup_native_coglet_ms"].get("ours"):
        out["startup_native_coglet_ms"]["goal_met"] = out["startup_native_coglet_ms"]["ours"]["median"] <= 30
    if "model_p50_ms" in out and out.get("model_inproc_p50_ms", {}).get("ours"):
        fl = out["model_inproc_p50_ms"]["ours"]["median"]
        e = out["model_p50_ms"]
        e["floor_ms"] = fl
        e["goal_limit_ms"] = fl * 1.05 + 0.5
        if e.get("ours"):
            e["goal_met"] = e["ours"]["median"] <= e["goal_limit_ms"]
    # the sync scenario's goal includes 0 non-2xx and 70% of the HTTP-stack floor
    if "sync_rps" in out:
        c = raw["_counts"].get("ours", {}).get("sync")
        if c and (c["non2xx"] or c["unexpected"] or c["socket_errors"]):
            out["sync_rps"]["goal_met"] = False
        root = out.get("root_rps", {}).get("ours")
        if root and out["sync_rps"].get("ours"):
            share = out["sync_rps"]["ours"]["median"] / root["median"]
            out["sync_rps"]["of_root"] = share
            if share < 0.7:
                out["sync_rps"]["goal_met"] = False
    if "async8_rps" in out and out["async8_rps"].get("ours") and out.get("sync_rps", {}).get("ours"):
        share = out["async8_rps"]["ours"]["median"] / out["sync_rps"]["ours"]["median"]
        out["async8_rps"]["of_sync"] = share
        if share < 1:
            out["async8_rps"]["goal_met"] = False
    return out


def fmt(x, unit):
    if x is None:
        return "—"
    if unit in ("req/s", "pred/s"):
        return "%.0f" % x
    if unit == "s":
        return "%.3f" % x if x < 10 else "%.1f" % x
    if unit == "µs":
        return "%.0f" % x if abs(x) >= 10 else "%.1f" % x
    if unit == "MiB":
        return "%.1f" % x
    if unit == "ms":
        return "%.1f" % x if x < 100 else "%.0f" % x
    return "%g" % x


def counts_text(counts):
    """'0' or e.g. '12 (409×12)' for non-2xx, plus other failures."""
    if not counts:
        return "—"
    parts = []
    non = counts["non2xx"]
    s = str(non)
    if counts["statuses"]:
        s += " (" + ", ".join("%s×%d" % (k, v) for k, v in sorted(counts["statuses"].items())) + ")"
    parts.append(s)
    if counts["unexpected"]:
        parts.append("%d failed-2xx" % counts["unexpected"])
    if counts["socket_errors"]:
        parts.append("%d socket err" % counts["socket_errors"])
    return ", ".join(parts)


COUNT_KEYS = {"sync_rps": "sync", "async8_rps": "async8", "sse_s": "sse", "file64_datauri_s": "file64_datauri",
              "file64_upload_s": "file64_upload", "json20_s": "json20", "schema50_with_us": "schema50_with",
              "schema50_without_us": "schema50_without", "health_rps": "health", "root_rps": "root",
              "model_p50_ms": "model"}


def markdown_table(doc):
    s = doc["scenarios"]
    counts = doc["counts"]
    lines = ["| scenario | unit | ours median [min–max] | anchor median [min–max] | ours vs anchor | goal | met | non-2xx ours / anchor |",
             "|---|---|---|---|---|---|---|---|"]
    for metric, e in s.items():
        unit = e["unit"]

        def cell(kind):
            x = e.get(kind)
            if not x:
                return "—"
            txt = "%s [%s–%s]" % (fmt(x["median"], unit), fmt(x["min"], unit), fmt(x["max"], unit))
            if "net_median" in x:
                txt += " (net %s)" % fmt(x["net_median"], unit)
            return txt

        if "speedup" in e:
            if unit == "MiB":
                rel = "%.2f× the anchor" % e["ratio"]
            elif 0.995 < e["speedup"] < 1.005:
                rel = "same"
            elif metric.startswith("cpu_"):
                rel = ("%.2f× less" % e["speedup"]) if e["speedup"] >= 1 else ("**%.2f× more**" % (1.0 / e["speedup"]))
            elif e["speedup"] >= 1:
                rel = "%.2f× faster" % e["speedup"]
            elif 1.0 / e["speedup"] < 1.005:
                rel = "same"
            else:
                rel = "**%.2f× slower**" % (1.0 / e["speedup"])
            if "speedup_round_min" in e and unit != "MiB":
                rel += " (per round %.2f–%.2f×)" % (e["speedup_round_min"], e["speedup_round_max"])
        else:
            rel = "—"
        goal = e["goal"]
        if "of_root" in e:
            goal += "; %.0f%% of `GET /`" % (100 * e["of_root"])
        if "of_sync" in e:
            goal += "; %.2f× our sync" % e["of_sync"]
        if "ours_p50_us" in e:
            goal += "; ours p50 %s µs" % fmt(e["ours_p50_us"], "µs")
        if "goal_limit_ms" in e:
            goal += "; floor %.1f ms: limit %.1f ms" % (e["floor_ms"], e["goal_limit_ms"])
        if "ours_overhead_us" in e:
            goal += "; floor %s µs, overhead ours %s / anchor %s µs" % (
                fmt(e.get("floor_p99_us", e.get("floor_p50_us")), "µs"), fmt(e["ours_overhead_us"], "µs"),
                fmt(e.get("anchor_overhead_us"), "µs"))
        met = {True: "yes", False: "**no**"}.get(e.get("goal_met"), "")
        ck = COUNT_KEYS.get(metric)
        nc = "—"
        if ck:
            nc = "%s / %s" % (counts_text(counts.get("ours", {}).get(ck)), counts_text(counts.get("anchor", {}).get(ck)))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (e["title"], unit, cell("ours"), cell("anchor"), rel,
                                                                   goal, met, nc))
    return "\n".join(lines)


def update_docs(doc, table, marker="bench-table"):
    if not os.path.exists(DOC):
        log("docs/benchmarks.md not found; not updating it")
        return
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    begin, end = "<!-- %s:begin -->" % marker, "<!-- %s:end -->" % marker
    if begin not in text or end not in text:
        log("docs/benchmarks.md has no %s markers; not updating it" % marker)
        return
    m = doc["meta"]
    vers = m.get("versions") or {}
    desc = {}
    for kind in ORDER:
        x = vers.get(kind)
        desc[kind] = ("coglet %s (%s)" % (x.get("coglet"), x.get("git_sha"))) if isinstance(x, dict) else str(x)
    block = ("%s\n%s\n\nRun of %s: ours %s, anchor %s; repo at `%s`; %d rounds, %s; servers on CPU %s, load on CPU %s; "
             "%.0f s.\n%s") % (
        begin, table, m["date"], desc["ours"], desc["anchor"], m["git"], m["rounds"], m["mode"],
        m["server_cpus"] or "all", m["load_cpus"] or "all", m.get("duration_s") or 0, end)
    if doc.get("rebuilt_during_run"):
        block = block.replace(end, "**Warning:** %s.\n%s" % ("; ".join(doc["rebuilt_during_run"]), end))
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(text)
    log("refreshed the %s in docs/benchmarks.md" % marker)


def make_plots(path):
    plot = os.path.join(HERE, "plot.py")
    py = os.path.join(TOOLS_VENV, "bin", "python")
    if not os.path.exists(py):
        try:
            import matplotlib  # noqa: F401
            py = sys.executable
        except ImportError:
            log("no matplotlib (run benchmarks/setup_anchor.sh to create benchmarks/.venv-tools); skipping plots")
            return
    r = subprocess.run([py, plot, path, os.path.dirname(os.path.abspath(path))])
    if r.returncode != 0:
        log("plot.py failed (%s)" % r.returncode)


# ---------------------------------------------------------------- main ----------------------


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0].strip()
    except (OSError, IndexError):
        wrk = None
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_mib": mem, "kernel": platform.release(),
            "python": platform.python_version(), "wrk": wrk}


def git_rev():
    try:
        sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    ap.add_argument("--quick", action="store_true", help="short loads, fewer samples (~2 minutes)")
    ap.add_argument("--only", default=None, help="comma-separated scenarios: %s (aliases: %s)" % (
        ", ".join(GROUPS), ", ".join(sorted(ALIASES))))
    ap.add_argument("--no-pin", action="store_true", help="do not pin servers and load generator to separate CPUs")
    ap.add_argument("--model-pin", action="store_true",
                    help="model scenario: pin the servers like the others (default: every CPU, for torch's threads)")
    ap.add_argument("--no-docs", action="store_true", help="do not refresh the table in docs/benchmarks.md")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--out", default=None, help="default results/latest.json (results/model.json for --only model)")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: redraw the plots and refresh docs/benchmarks.md from --out")
    args = ap.parse_args()
    if args.out is None:
        only_model = bool(args.only) and [g.strip() for g in args.only.split(",")] == ["model"]
        args.out = os.path.join(RESULTS, ("model-pinned.json" if args.model_pin else "model.json") if only_model
                                else "latest.json")
    if args.render:
        with open(args.out) as f:
            doc = json.load(f)
        table = markdown_table(doc)
        print(table)
        if not args.no_plots:
            make_plots(args.out)
        m = doc["meta"]
        if args.no_docs:
            pass
        elif m.get("mode") == "full" and m.get("scenarios_run") == ["model"]:
            update_docs(doc, table, "model-table-pinned" if m.get("model_pinned") else "model-table")
        elif m.get("mode") != "full" or sorted(m.get("scenarios_run", [])) != sorted(GROUPS):
            log("not a full run of every scenario: docs/benchmarks.md left alone")
        else:
            update_docs(doc, table)
        return 0

    if args.only and any(g.strip() in EXTRA_GROUPS for g in args.only.split(",")):
        r = subprocess.run(["bash", os.path.join(HERE, "setup_model.sh")])
        if r.returncode != 0:
            sys.exit("setup_model.sh failed")
    cfg = dict(QUICK if args.quick else FULL)
    if args.rounds:
        cfg["rounds"] = args.rounds
    groups = list(GROUPS)
    if args.only:
        groups = []
        for g in args.only.split(","):
            g = ALIASES.get(g.strip(), g.strip())
            if g not in GROUP_FNS:
                ap.error("unknown scenario %r; choose from %s" % (g, ", ".join(GROUPS)))
            if g not in groups:
                groups.append(g)

    if "queue" in groups and not shutil.which("redis-server"):
        sys.exit("redis-server is not installed (the queue scenarios): scripts/install-deps.sh bench")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed. Install it with:\n    apt-get update && apt-get install -y wrk")
    if not os.path.exists(os.path.join(VENVS["ours"], "bin", "python")):
        sys.exit("no %s: build ours first (make build)" % VENVS["ours"])
    r = subprocess.run(["bash", os.path.join(HERE, "setup_anchor.sh")] + (["all"] if "queue" in groups else []))
    if r.returncode != 0:
        sys.exit("setup_anchor.sh failed")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    t_start = time.time()
    ctx = Ctx(cfg, not args.no_pin)
    ctx.model_pinned = args.model_pin
    log("CPUs %s; servers on %s, load generator on %s; %d rounds (%s); scenarios: %s" % (
        ctx.all_cpus, sorted(ctx.server_cpus) if ctx.server_cpus else "all",
        sorted(ctx.load_cpus) if ctx.load_cpus else "all", cfg["rounds"], "quick" if args.quick else "full",
        ", ".join(groups)))
    raw = {"_counts": {k: {} for k in ORDER}}
    extra = {k: [] for k in ORDER}
    errors = []
    floor = []
    group_time = {}
    stamps = {k: build_stamp(k) for k in ORDER}
    rebuilt = []
    try:
        if "file64" in groups:
            ctx.start_sink()
        baselines = {k: launcher_baseline_mib(k) for k in ORDER}
        baselines["ours_native"] = launcher_baseline_mib("ours", native=True)
        log("launcher baseline RSS (interpreter + cog + coglet imported): %s" % {
            k: round(v, 1) if v else v for k, v in baselines.items()})
        # warm-up: one start of each (compiles .pyc files, fills the page cache)
        for kind in ORDER:
            s = Server(ctx, kind, os.path.join(PRED, "sync_noop"), tag="warmup")
            try:
                s.start()
                ctx.versions[kind] = s.version
            except ServerError as e:
                errors.append("warm-up %s: %s" % (kind, e))
                log("warm-up failed: %s" % e)
            finally:
                s.stop()
        for rnd in range(cfg["rounds"]):
            if "sync" in groups:
                try:
                    floor.append(inproc_floor(ctx))
                except Exception as e:  # noqa: BLE001
                    errors.append("round %d in-process floor: %s" % (rnd + 1, e))
            for g in groups:
                reps = cfg["startups"] if g == "startup" else 1
                for _ in range(reps):
                    for kind in ORDER:
                        t0 = time.time()
                        try:
                            rec = GROUP_FNS[g](ctx, kind)
                        except Exception as e:  # noqa: BLE001
                            msg = "round %d %s %s: %s: %s" % (rnd + 1, g, kind, type(e).__name__, e)
                            errors.append(msg)
                            log("ERROR " + msg)
                            continue
                        for metric, vals in rec["values"].items():
                            per = raw.setdefault(metric, {}).setdefault(kind, [[] for _ in range(cfg["rounds"])])
                            per[rnd].extend(x for x in vals if x is not None)
                        for key, c in rec.get("counts", {}).items():
                            tot = raw["_counts"][kind].setdefault(key, {"ok": 0, "non2xx": 0, "unexpected": 0,
                                                                        "socket_errors": 0, "statuses": {}})
                            for f in ("ok", "non2xx", "unexpected", "socket_errors"):
                                tot[f] += c[f]
                            for sk, sv in c["statuses"].items():
                                tot["statuses"][sk] = tot["statuses"].get(sk, 0) + sv
                        for f in rec.get("failures", [])[:5]:
                            ctx.odd("%s: %s" % (kind, f))
                        if "rejects_invalid" in rec:
                            extra[kind].append({"schema50_rejects_invalid": rec["rejects_invalid"]})
                        for k in ("async8_latency_us", "sync_attempted_rps", "schema50_mean_us", "model_throughput",
                                  "model_torch_threads", "model_sequential_409", "startup_phases_ms"):
                            if k in rec:
                                extra[kind].append({k: rec[k], "round": rnd + 1})
                        brief = ", ".join("%s=%s" % (m, fmt(vs[0], METRICS[m][1]) if vs else "—")
                                          for m, vs in rec["values"].items() if m in METRICS)
                        group_time[g] = group_time.get(g, 0.0) + time.time() - t0
                        if build_stamp(kind) != stamps[kind]:
                            stamps[kind] = build_stamp(kind)
                            rebuilt.append("%s in round %d (%s)" % (kind, rnd + 1, g))
                            log("note: a different build of %s was installed during round %d (%s)" % (kind, rnd + 1, g))
                        log("round %d/%d %-8s %-6s %5.1fs  %s" % (rnd + 1, cfg["rounds"], g, kind, time.time() - t0, brief))
    finally:
        ctx.close()

    scenarios = build_summary(ctx, raw, floor, baselines, groups)
    doc = {
        "meta": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git": git_rev(),
            "mode": "quick" if args.quick else "full",
            "rounds": cfg["rounds"],
            "config": cfg,
            "scenarios_run": groups,
            "machine": machine_info(),
            "server_cpus": sorted(ctx.server_cpus) if ctx.server_cpus else None,
            "model_pinned": ctx.model_pinned,
            "load_cpus": sorted(ctx.load_cpus) if ctx.load_cpus else None,
            "cores_note": ("servers (parent + worker) pinned to CPU %s, wrk and the Python clients to CPU %s"
                           % (sorted(ctx.server_cpus), sorted(ctx.load_cpus))) if ctx.server_cpus and
                          (groups != ["model"] or ctx.model_pinned) else
                          "not pinned: servers and load generator share all CPUs",
            "launcher": "python -m cog.server.http --host 127.0.0.1 (cog 0.23.1), venv bin first on PATH",
            "versions": ctx.versions,
            "venvs": VENVS,
            "launcher_baseline_rss_mib": baselines,
            "duration_s": round(time.time() - t_start, 1),
            "group_seconds": {k: round(v, 1) for k, v in group_time.items()},
        },
        "inproc_floor": floor,
        "scenarios": scenarios,
        "counts": raw["_counts"],
        "extra": extra,
        "errors": errors,
        "rebuilt_during_run": (["a different build was installed during the run: " + ", ".join(rebuilt)
                                + "; the results mix builds, run again on a quiet tree"] if rebuilt else []),
        "oddities": [{"note": k, "count": v} for k, v in ctx.oddities.items()],
        "server_logs": ctx.logdir,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
    os.replace(tmp, args.out)
    table = markdown_table(doc)
    print(table)
    if floor:
        print("\nin-process predict() floor: p50 %.2f µs, p99 %.2f µs" % (
            statistics.median(f["p50_us"] for f in floor), statistics.median(f["p99_us"] for f in floor)))
    print("launcher baseline RSS: %s" % {k: round(v, 1) if v else v for k, v in baselines.items()})
    if errors:
        print("\nERRORS:\n  " + "\n  ".join(errors))
    if rebuilt:
        print("\nWARNING: " + doc["rebuilt_during_run"][0])
    if ctx.oddities:
        print("\nnotes from the server logs and the checks (count × note):")
        for k, v in list(ctx.oddities.items())[:40]:
            print("  %4d × %s" % (v, k))
    print("\nwrote %s (%.0f s); server logs in %s" % (args.out, time.time() - t_start, ctx.logdir))
    if not args.no_plots:
        make_plots(args.out)
    if not args.quick and not args.only and not args.no_docs:
        update_docs(doc, table)
    elif not args.quick and groups == ["model"] and not args.no_docs:
        update_docs(doc, table, "model-table-pinned" if args.model_pin else "model-table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
