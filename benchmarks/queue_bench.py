#!/usr/bin/env python3
"""The pull-mode scenarios: coglet's queue door ("ours") against the original queue worker,
cog 0.6.1's `python -m cog.server.redis_queue` ("the anchor", benchmarks/.venv-queue-anchor,
made by `setup_anchor.sh queue`). run.py runs them as its `queue` group; alone:

    python benchmarks/queue_bench.py [--quick]

Each scenario gets a fresh redis-server (no persistence) on a free loopback port, the consumer
group created the way a platform does, and a webhook receiver in a process of its own
(webhook_receiver.c, epoll, keep-alive; the asyncio one below without a compiler or with
BENCH_QUEUE_RECEIVER=python) that timestamps every request it reads. A no-op predictor
(predictors/queue_noop, found through its cog.yaml by both) answers every prediction.

- drain: one consumer, N messages put on the stream in one pipeline, each with a `webhook`
  (start and completed responses); predictions per second from the first XADD to the last
  terminal webhook, and the parent's peak RSS meanwhile;
- start latency: one message at a time, from just before its XADD to the arrival of its
  `start` webhook (p50, p99);
- fleet: 1, 2 and 4 consumers draining one stream (not pinned: they share every core);
- the floors: queue_floor.c, a bare C loop with our process layout and traffic (the same Redis
  commands, both webhooks, a round trip through a forked child) and little else, drains the
  same way in our column, its webhooks written by hand ("floor") or sent with libcurl
  ("floor-curl"); the anchor's column repeats its drain. What this machine allows a consumer
  built this way, and what libcurl costs on top.

Standard library only (and a C compiler for the receiver).
"""

import argparse
import asyncio
import json
import os
import re
import signal
import shutil
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
PRED_DIR = os.path.join(HERE, "predictors", "queue_noop")
VENVS = {
    "ours": os.environ.get("BENCH_OURS_VENV", os.path.join(ROOT, ".venv")),
    "anchor": os.environ.get("BENCH_QUEUE_ANCHOR_VENV", os.path.join(HERE, ".venv-queue-anchor")),
}
FLOORS = {"floor": "raw", "floor-curl": "curl"}  # queue_floor.c's webhooks: by hand, or with libcurl
FLOOR_LIBS = ["-lhiredis", "-ljansson", "-lcurl"]
READY = {"ours": re.compile(rb"claiming predictions from"), "anchor": re.compile(rb"Waiting for message on"),
         "floor": re.compile(rb"^ready$", re.M), "floor-curl": re.compile(rb"^ready$", re.M)}

FULL = dict(drain_n=5000, anchor_drain_n=2000, latency_n=300, fleet_n=4000, anchor_fleet_n=1500)
QUICK = dict(drain_n=2000, anchor_drain_n=300, latency_n=100, fleet_n=1500, anchor_fleet_n=300)


log = logger("queue-bench")


def rss_mib(pid):
    st = proc_status(pid)
    return st["VmRSS"] if st else None


# ---------------------------------------------------------------- Redis ---------------------


class Resp:
    """Just enough RESP2 for the producer and the setup: commands, pipelines, replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError("bad reply %r" % line)

    def cmd(self, *args):
        self.sock.sendall(self.encode(args))
        return self.read()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read() for _ in commands]

    def close(self):
        self.sock.close()


class RedisServer:
    def __init__(self, cpus=None):
        self.port = free_port()
        pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=pre)
        deadline = time.time() + 10
        while True:
            try:
                self.r = Resp(self.port)
                if self.r.cmd("PING") == "PONG":
                    break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self):
        try:
            self.r.cmd("SHUTDOWN", "NOSAVE")
        except (OSError, ConnectionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the webhook receiver ------


def receiver_main():
    """A process of its own: answers 200 {} to every POST (keep-alive) and prints
    `time_ns status id` per request on stdout, one write per batch of requests read.

    It shares a CPU with Redis and the producer, so it is kept cheap: at several thousand
    predictions a second (two webhooks each) a heavier receiver, not the consumer, would set
    the measured rate."""
    out = sys.stdout.buffer
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    length_re = re.compile(rb"content-length:[ \t]*(\d+)", re.I)
    loads, time_ns = json.loads, time.time_ns

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.buf = b""

        def data_received(self, data):
            buf = self.buf + data if self.buf else data
            lines = []
            answers = 0
            pos = 0
            while True:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    break
                m = length_re.search(buf, pos, end)
                n = int(m.group(1)) if m else 0
                if len(buf) < end + 4 + n:
                    break
                body = buf[end + 4:end + 4 + n]
                pos = end + 4 + n
                now = time_ns()
                try:
                    doc = loads(body)
                    lines.append(b"%d %s %s\n" % (now, str(doc.get("status")).encode(), str(doc.get("id")).encode()))
                except ValueError:
                    lines.append(b"%d bad -\n" % now)
                answers += 1
            self.buf = buf[pos:]
            if answers:
                self.t.write(ok * answers)
                out.write(b"".join(lines))
                out.flush()

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", 0, backlog=512)
        out.write(b"PORT %d\n" % server.sockets[0].getsockname()[1])
        out.flush()
        await asyncio.Event().wait()

    asyncio.run(main())


def build_c(name, libs=()):
    """benchmarks/NAME.c built into .build/NAME (again when older than its source): its path, or
    None without a compiler or when it does not build (logged)."""
    src = os.path.join(HERE, name + ".c")
    exe = os.path.join(HERE, ".build", name)
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if not cc:
            log("no C compiler for %s.c" % name)
            return None
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe + ".tmp", src] + list(libs),
                           capture_output=True, text=True)
        if r.returncode != 0:
            log("cannot build %s.c: %s" % (name, r.stderr.strip()[-500:]))
            return None
        os.replace(exe + ".tmp", exe)
    return exe


def receiver_command():
    """The C receiver (webhook_receiver.c), or the Python one without a compiler or with
    BENCH_QUEUE_RECEIVER=python."""
    python = [sys.executable, os.path.abspath(__file__), "receiver"]
    if os.environ.get("BENCH_QUEUE_RECEIVER") == "python":
        return python
    exe = build_c("webhook_receiver")
    if not exe:
        log("the Python webhook receiver (slower: it may set the drain rate)")
        return python
    return [exe]


class Receiver:
    def __init__(self, cpus=None):
        pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(receiver_command(),
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=pre, bufsize=0)  # unbuffered: _pump reads the fd itself
        self.port = int(self.proc.stdout.readline().split()[1])
        self.url = "http://127.0.0.1:%d/hook" % self.port
        self.cond = threading.Condition()
        self.reset()
        threading.Thread(target=self._pump, daemon=True).start()

    def reset(self):
        with self.cond:
            self.start, self.terminal, self.dups, self.count = {}, {}, 0, 0

    def _pump(self):
        """Reads the receiver's lines in whatever chunks the pipe gives, and wakes the waiters
        once a chunk (per line, the waiting thread's wake-ups cost the CPU the receiver and
        Redis share as much as the receiver itself)."""
        fd = self.proc.stdout.fileno()
        rest = b""
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            with self.cond:
                for line in data[:cut].decode().splitlines():
                    t, status, pid = line.split()
                    if status == "processing":
                        self.start.setdefault(pid, int(t))
                    elif status in ("succeeded", "failed", "canceled"):
                        if pid in self.terminal:
                            self.dups += 1
                        else:
                            self.terminal[pid] = int(t)
                    self.count += 1
                self.cond.notify_all()

    def wait_terminals(self, n, timeout):
        deadline = time.time() + timeout
        with self.cond:
            while len(self.terminal) < n:
                left = deadline - time.time()
                if left <= 0:
                    raise RuntimeError("only %d of %d terminal webhooks after %.0fs" % (len(self.terminal), n, timeout))
                self.cond.wait(min(left, 0.5))

    def wait_start_and_end(self, pid, timeout=30):
        deadline = time.time() + timeout
        with self.cond:
            while pid not in self.start or pid not in self.terminal:
                left = deadline - time.time()
                if left <= 0:
                    raise RuntimeError("no start and terminal webhook for %s" % pid)
                self.cond.wait(min(left, 0.5))
            return self.start[pid]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


# ---------------------------------------------------------------- consumers -----------------


class Consumer:
    def __init__(self, kind, redis_port, stream, name, logdir, cpus=None, n=None):
        self.kind = kind
        py = os.path.join(VENVS.get(kind, VENVS["ours"]), "bin", "python")  # the floor: no Python
        if kind in FLOORS:  # queue_floor.c: handles n messages, then exits
            cmd = [build_c("queue_floor", FLOOR_LIBS), FLOORS[kind], str(redis_port), stream, stream, name, str(n)]
        elif kind == "ours":
            cmd = [py, "-m", "coglet", "--redis-url", "redis://127.0.0.1:%d/0" % redis_port, "--input-queue", stream,
                   "--consumer-id", name, "--upload-url", "http://127.0.0.1:9/upload"]
        else:
            cmd = [py, "-m", "cog.server.redis_queue", "--redis-host", "127.0.0.1", "--redis-port", str(redis_port),
                   "--input-queue", stream, "--upload-url", "http://127.0.0.1:9/upload", "--consumer-id", name]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        venv = VENVS.get(kind, VENVS["ours"])
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env["VIRTUAL_ENV"] = venv
        self.log_path = os.path.join(logdir, "queue-%s-%s-%d.log" % (kind, name, time.time_ns() % 10**9))
        self.logf = open(self.log_path, "wb")
        pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(cmd, cwd=PRED_DIR, env=env, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pre)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while True:
            with open(self.log_path, "rb") as f:
                if READY[self.kind].search(f.read()):
                    return
            if self.proc.poll() is not None or time.time() > deadline:
                with open(self.log_path, "rb") as f:
                    tail = f.read()[-2000:].decode("utf-8", "replace")
                raise RuntimeError("%s consumer not ready (exit %s):\n%s" % (self.kind, self.proc.poll(), tail))
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()
        self.logf.close()


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()
        self.start()

    def run(self):
        while not self.done.is_set():
            v = rss_mib(self.pid)
            if v:
                self.peak = max(self.peak, v)
            time.sleep(0.02)

    def finish(self):
        self.done.set()
        self.join()
        return self.peak


def message(i, url, tag):
    return json.dumps({"id": "%s-%d" % (tag, i), "input": {}, "webhook": url}, separators=(",", ":"))


def drain(kind, consumers, n, logdir, server_cpus=None, load_cpus=None):
    """n messages through `consumers` consumers: (predictions/s, parent peak RSS of the first)."""
    redis = RedisServer(load_cpus)
    rx = Receiver(load_cpus)
    cs = []
    try:
        redis.r.cmd("XGROUP", "CREATE", "q", "q", "$", "MKSTREAM")
        cs = [Consumer(kind, redis.port, "q", "c%d" % i, logdir, server_cpus, n) for i in range(consumers)]
        for c in cs:
            c.wait_ready()
        sampler = Sampler(cs[0].proc.pid)
        tag = "d%d" % time.time_ns()
        t0 = time.time_ns()
        for lo in range(0, n, 500):
            redis.r.pipeline([("XADD", "q", "*", "value", message(i, rx.url, tag)) for i in range(lo, min(n, lo + 500))])
        rx.wait_terminals(n, timeout=60 + n / 10.0)
        peak = sampler.finish()
        t1 = max(rx.terminal.values())
        if rx.dups:
            log("%s: %d duplicate terminal webhooks" % (kind, rx.dups))
        return n / ((t1 - t0) / 1e9), peak
    finally:
        for c in cs:
            c.stop()
        rx.stop()
        redis.stop()


def start_latency(kind, n, logdir, server_cpus=None, load_cpus=None):
    """XADD → start webhook, one message at a time: [µs]."""
    redis = RedisServer(load_cpus)
    rx = Receiver(load_cpus)
    c = None
    try:
        redis.r.cmd("XGROUP", "CREATE", "q", "q", "$", "MKSTREAM")
        c = Consumer(kind, redis.port, "q", "c0", logdir, server_cpus)
        c.wait_ready()
        out = []
        tag = "l%d" % time.time_ns()
        for i in range(n + 5):
            time.sleep(0.005)  # the consumer is idle, blocked in its read
            t0 = time.time_ns()
            redis.r.cmd("XADD", "q", "*", "value", message(i, rx.url, tag))
            ts = rx.wait_start_and_end("%s-%d" % (tag, i))
            if i >= 5:  # the first few warm up connections and caches
                out.append((ts - t0) / 1000.0)
        return out
    finally:
        if c:
            c.stop()
        rx.stop()
        redis.stop()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_group(kind, cfg, logdir, server_cpus=None, load_cpus=None):
    """One round of every queue scenario for one kind: {metric: [value]}."""
    v = {}
    n = cfg["drain_n"] if kind == "ours" else cfg["anchor_drain_n"]
    rate, peak = drain(kind, 1, n, logdir, server_cpus, load_cpus)
    v["queue_drain_pps"] = [rate]
    v["queue_rss_mib"] = [peak]
    # the floor rows: queue_floor.c's drains in our column, the anchor's drain (just measured) in its
    for metric, floor in (("queue_floor_pps", "floor"), ("queue_floor_curl_pps", "floor-curl")):
        if kind == "anchor":
            v[metric] = [rate]
        elif build_c("queue_floor", FLOOR_LIBS):
            v[metric] = [drain(floor, 1, n, logdir, server_cpus, load_cpus)[0]]
    lat = start_latency(kind, cfg["latency_n"], logdir, server_cpus, load_cpus)
    v["queue_start_p50_us"] = [statistics.median(lat)]
    v["queue_start_p99_us"] = [pct(lat, 0.99)]
    fleet_n = cfg["fleet_n"] if kind == "ours" else cfg["anchor_fleet_n"]
    for k in (1, 2, 4):
        rate, _ = drain(kind, k, fleet_n, logdir)  # not pinned: the consumers share every core
        v["queue_fleet%d_pps" % k] = [rate]
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only-kind", choices=("ours", "anchor"), default=None)
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    logdir = tempfile.mkdtemp(prefix="coglet-queue-bench-")
    res = {}
    for _ in range(args.rounds):
        for kind in ("ours", "anchor"):
            if args.only_kind and kind != args.only_kind:
                continue
            t0 = time.time()
            v = run_group(kind, cfg, logdir)
            log("%s %.0fs %s" % (kind, time.time() - t0, {k: round(x[0], 1) for k, x in v.items()}))
            for k, x in v.items():
                res.setdefault(k, {}).setdefault(kind, []).extend(x)
    print(json.dumps({k: {kind: statistics.median(x) for kind, x in d.items()} for k, d in res.items()}, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "receiver":
        receiver_main()
    else:
        sys.exit(main())
