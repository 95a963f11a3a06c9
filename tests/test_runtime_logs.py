"""Runtime fidelity, logs (docs/worker-protocol.md#log-routing, docs/logging.md): what a predictor writes ends up in its
own prediction's `logs` — print and sys.stdout/sys.stderr writes from any thread of a sync
prediction, from the tasks (and to_thread helpers) of an async one, through a replaced
sys.stdout or contextlib.redirect_stdout; setup output lands in setup.logs; fd 1/2 output
(os.write, subprocesses) is logged by the parent and never lost; a single write over 4 MiB is
truncated with the documented marker; a long fd 1/2 line is logged in pieces of at most
4,096 bytes."""

import json
import re

import pytest


MARK = "[**** LOG LINE TRUNCATED AT 4 MiB ****]"
FOUR_MIB = 4 * 1024 * 1024

SYNC = """
import concurrent.futures
import contextlib
import io
import os
import subprocess
import sys
import threading

print("SETUP-IMPORT-PRINT")

import logging
LOG = logging.getLogger("user.model")
LOG.addHandler(logging.StreamHandler())   # holds sys.stderr as it is at import time
LOG.setLevel(logging.INFO)
LOG.propagate = False


class Predictor:
    def setup(self):
        print("SETUP-PRINT from setup()")
        sys.stderr.write("SETUP-STDERR line\\n")
        os.write(1, b"SETUP-FD1 raw\\n")
        subprocess.run(["sh", "-c", "echo SETUP-SUBPROC"], check=True)

    def predict(self, mode: str = "plain", tag: str = "", n: int = 0):
        if mode == "plain":
            print("one")
            sys.stderr.write("two\\n")
            sys.stdout.write("three\\n")
            print("four", file=sys.stderr)
            return "plain"
        if mode == "threads":
            def from_thread(k):
                print("thread %d stdout" % k)
                sys.stderr.write("thread %d stderr\\n" % k)
            ts = [threading.Thread(target=from_thread, args=(k,)) for k in range(3)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda k: print("pool %d" % k), range(2)))
            print("main done")
            return "threads"
        if mode == "replace":
            old = sys.stdout
            buf = io.StringIO()
            sys.stdout = buf
            print("into stringio")
            sys.stdout.write("written to replacement\\n")
            sys.stdout = old
            print("restored %s" % type(sys.stdout).__name__)
            return buf.getvalue()
        if mode == "replace_stderr":
            old = sys.stderr
            buf = io.StringIO()
            sys.stderr = buf
            print("err into stringio", file=sys.stderr)
            sys.stderr = old
            return buf.getvalue()
        if mode == "readback":
            # a common capture idiom: read the replacement back through sys.stdout
            sys.stdout = io.StringIO()
            try:
                print("captured twice")
                got = sys.stdout.getvalue()
            finally:
                sys.stdout = sys.__stdout__
            print("back to normal")
            return got
        if mode == "redirect":
            with contextlib.redirect_stdout(io.StringIO()) as f:
                print("redirected line")
            with contextlib.redirect_stderr(io.StringIO()) as g:
                print("redirected err", file=sys.stderr)
            print("after redirect")
            return [f.getvalue(), g.getvalue(), type(sys.stdout).__name__]
        if mode == "huge":
            sys.stdout.write("x" * (5 * 1024 * 1024) + "\\n")
            print("after huge")
            return "huge"
        if mode == "huge_multibyte":
            sys.stdout.write("\\u00e9" * (3 * 1024 * 1024) + "\\n")   # 6 MiB of UTF-8
            return "huge_multibyte"
        if mode == "fd":
            print("py before " + tag)
            os.write(1, ("FD1-%s\\n" % tag).encode())
            os.write(2, ("FD2-%s\\n" % tag).encode())
            subprocess.run(["sh", "-c", "i=0; while [ $i -lt %d ]; do echo SUB-%s-$i; i=$((i+1)); done" % (n, tag)],
                           check=True)
            subprocess.run(["sh", "-c", "echo SUBERR-%s >&2" % tag], check=True)
            print("py after " + tag)
            return "fd"
        if mode == "logging":
            LOG.info("via logging %s", tag)
            return "logging"
        if mode == "many_lines":
            sys.stdout.write("abcdefghi\\n" * 500000)   # 5 MB in one write
            print("next write")
            return "many_lines"
        if mode == "partial":
            print("no newline at the end", end="")
            return "partial"
        raise ValueError(mode)
"""

ASYNC = """
import asyncio
import sys
import threading


class Predictor:
    async def setup(self):
        self.stop = False
        self.bg = asyncio.create_task(self.background())   # not any prediction's task

    async def background(self):
        while True:
            print("BACKGROUND-TICK")
            await asyncio.sleep(0.02)

    async def predict(self, tag: str = "") -> str:
        print("%s direct" % tag)

        async def child(k):
            await asyncio.sleep(0.01 * k)
            print("%s child %d" % (tag, k))
            sys.stderr.write("%s child err %d\\n" % (tag, k))

        await asyncio.gather(*(child(k) for k in range(3)))
        task = asyncio.create_task(child(9))
        await task
        await asyncio.to_thread(print, "%s to_thread" % tag)
        await asyncio.sleep(0.1)   # the background task prints meanwhile
        print("%s end" % tag)
        return tag
"""


@pytest.fixture(scope="module")
def sync_srv(make_module_server):
    srv = make_module_server(code=SYNC)
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


@pytest.fixture(scope="module")
def async_srv(make_module_server):
    srv = make_module_server(code=ASYNC)
    assert srv.health()["status"] == "READY", srv.log_text()
    return srv


def ok(srv, inp):
    r = srv.predict(inp)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded", body
    return body


def test_stdout_and_stderr_interleaved_in_order(sync_srv):
    body = ok(sync_srv, {"mode": "plain"})
    assert body["logs"] == "one\ntwo\nthree\nfour\n"


def test_writes_from_any_thread_of_a_sync_prediction(sync_srv):
    body = ok(sync_srv, {"mode": "threads"})
    lines = body["logs"].splitlines()
    expected = {"thread %d stdout" % k for k in range(3)} | {"thread %d stderr" % k for k in range(3)} \
        | {"pool 0", "pool 1", "main done"}
    assert set(lines) == expected, body["logs"]
    assert len(lines) == len(expected)
    assert lines[-1] == "main done"


def test_partial_last_line_is_kept(sync_srv):
    body = ok(sync_srv, {"mode": "partial"})
    assert body["logs"] == "no newline at the end"
    # and it does not leak into the next prediction
    assert ok(sync_srv, {"mode": "plain"})["logs"] == "one\ntwo\nthree\nfour\n"


def test_replaced_sys_stdout_stays_captured(sync_srv):
    body = ok(sync_srv, {"mode": "replace"})
    # the user's stream still gets its text ...
    assert body["output"] == "into stringio\nwritten to replacement\n"
    # ... and so do the logs; restoring gives our writer back
    assert body["logs"] == "into stringio\nwritten to replacement\nrestored _SlotLogWriter\n", body["logs"]


def test_replaced_sys_stderr_stays_captured(sync_srv):
    body = ok(sync_srv, {"mode": "replace_stderr"})
    assert body["output"] == "err into stringio\n"
    assert body["logs"] == "err into stringio\n"


def test_replaced_sys_stdout_reads_back_as_the_users_stream(sync_srv):
    """`sys.stdout = io.StringIO(); print(...); sys.stdout.getvalue()` works unchanged (it does
    in plain Python and in the Rust coglet, where the replacement is not wrapped), and
    the text is in the logs too."""
    body = ok(sync_srv, {"mode": "readback"})
    assert body["output"] == "captured twice\n"
    assert body["logs"] == "captured twice\nback to normal\n"


def test_contextlib_redirect_stays_captured(sync_srv):
    body = ok(sync_srv, {"mode": "redirect"})
    assert body["output"] == ["redirected line\n", "redirected err\n", "_SlotLogWriter"]
    assert body["logs"] == "redirected line\nredirected err\nafter redirect\n", body["logs"]


def test_single_write_over_4_mib_is_truncated(sync_srv):
    body = ok(sync_srv, {"mode": "huge"})
    logs = body["logs"]
    assert MARK in logs
    head, _, tail = logs.partition(MARK)
    assert head == "x" * (FOUR_MIB - len(MARK)), len(head)
    assert len((head + MARK).encode()) == FOUR_MIB
    assert tail == "after huge\n"


def test_one_write_of_many_lines_over_4_mib_is_truncated(sync_srv):
    body = ok(sync_srv, {"mode": "many_lines"})
    head, mark, tail = body["logs"].partition(MARK)
    assert mark == MARK
    assert len(head) == FOUR_MIB - len(MARK)
    assert head.startswith("abcdefghi\nabcdefghi\n")
    assert tail == "next write\n"


def test_logging_stream_handler_is_captured(sync_srv):
    assert ok(sync_srv, {"mode": "logging", "tag": "L1"})["logs"] == "via logging L1\n"


def test_truncation_keeps_utf8_characters_whole(sync_srv):
    body = ok(sync_srv, {"mode": "huge_multibyte"})
    logs = body["logs"]
    assert logs.endswith(MARK), logs[-80:]
    head = logs[: -len(MARK)]
    assert set(head) == {"\u00e9"}
    assert len(head.encode()) <= FOUR_MIB - len(MARK)
    assert len(head.encode()) >= FOUR_MIB - len(MARK) - 1


def test_fd_and_subprocess_output_logged_by_parent_not_lost(sync_srv):
    n = 3000
    body = ok(sync_srv, {"mode": "fd", "tag": "t1", "n": n})
    assert body["logs"] == "py before t1\npy after t1\n", body["logs"]
    sync_srv.wait_log("SUB-t1-%d" % (n - 1))
    sync_srv.wait_log("SUBERR-t1")
    messages = sync_srv.messages()
    got = [m for m in messages if isinstance(m, str) and m.startswith("SUB-t1-")]
    # every line, once, in order, nothing cut or merged
    assert got == ["SUB-t1-%d" % i for i in range(n)], (len(got), got[:3], got[-3:])
    assert "FD1-t1" in messages and "FD2-t1" in messages and "SUBERR-t1" in messages
    line = sync_srv.wait_log(r'"message":"SUB-t1-0"')
    assert json.loads(line)["target"] == "coglet::user"


def test_setup_output_in_setup_logs(sync_srv):
    logs = sync_srv.health()["setup"]["logs"]
    for needle in ("SETUP-IMPORT-PRINT", "SETUP-PRINT from setup()", "SETUP-STDERR line", "SETUP-FD1 raw",
                   "SETUP-SUBPROC"):
        assert re.search(r"^\[coglet::setup\] %s$" % re.escape(needle), logs, re.M), (needle, logs)
    # setup output never shows up in a prediction
    assert "SETUP" not in ok(sync_srv, {"mode": "plain"})["logs"]


def test_async_prediction_tasks_log_into_the_prediction(async_srv):
    body = ok(async_srv, {"tag": "A"})
    lines = body["logs"].splitlines()
    expected = {"A direct", "A to_thread", "A end"} | {"A child %d" % k for k in (0, 1, 2, 9)} \
        | {"A child err %d" % k for k in (0, 1, 2, 9)}
    assert set(lines) == expected, body["logs"]
    assert len(lines) == len(expected)
    assert lines[0] == "A direct" and lines[-1] == "A end"
    # the setup-created background task is nobody's prediction: server log only
    assert "BACKGROUND-TICK" not in body["logs"]
    # (logged as coglet::setup while setup ran, coglet::user after)
    async_srv.wait_log(r'"message":"BACKGROUND-TICK".*"target":"coglet::user"')


def test_async_predictions_logs_are_separate(async_srv):
    a = ok(async_srv, {"tag": "first"})
    b = ok(async_srv, {"tag": "second"})
    assert "second" not in a["logs"] and "first" not in b["logs"]
    assert b["logs"].splitlines()[0] == "second direct"


def test_prediction_lines_in_server_log_with_id(sync_srv):
    body = ok(sync_srv, {"mode": "plain"})
    line = sync_srv.wait_log(r'"message":"three".*"prediction_id":"%s"' % body["id"])
    rec = json.loads(line)
    assert rec["target"] == "coglet::prediction"


LONG_LINE = """
import os

# 20,000 bytes, every 5-byte cell numbered: a lost, repeated or reordered byte shows
PAYLOAD = "".join("%04d|" % i for i in range(4000))


class Predictor:
    def setup(self):
        os.write(1, PAYLOAD.encode() + b"\\n")

    def predict(self) -> str:
        return "ok"
"""


def test_long_fd1_line_is_logged_in_pieces_of_at_most_4096_bytes(make_server):
    """The parent cuts what the worker writes on fd 1/2 into log lines of at most 4,096 bytes
    (docs/worker-protocol.md#worker-output-on-fds-1-and-2): one 20,000-byte line becomes
    pieces of 4,096 bytes and a last one, in order, none lost."""
    payload = "".join("%04d|" % i for i in range(4000))
    srv = make_server(code=LONG_LINE)
    assert srv.health()["status"] == "READY", srv.log_text()
    logs = srv.health()["setup"]["logs"]
    pieces = re.findall(r"^\[coglet::setup\] ([\d|]+)$", logs, re.M)
    assert "".join(pieces) == payload, [len(p) for p in pieces]
    assert [len(p) for p in pieces] == [4096] * 4 + [20000 - 4 * 4096]
    # the server's own log lines carry the same pieces
    logged = [m for m in srv.messages() if isinstance(m, str) and re.fullmatch(r"[\d|]+", m)]
    assert logged == pieces


LONG_UTF8_LINE = """
import os


class Predictor:
    def setup(self):
        # 20,001 bytes of a 3-byte character: 4,096 is not a multiple of 3
        os.write(2, ("\\u20ac" * 6667).encode() + b"\\n")

    def predict(self) -> str:
        return "ok"
"""


def test_long_fd2_line_is_cut_between_utf8_characters(make_server):
    """A piece ends before a character rather than inside it, so every piece is valid UTF-8
    (the JSON log and setup.logs hold text) and the characters join up again."""
    srv = make_server(code=LONG_UTF8_LINE)
    assert srv.health()["status"] == "READY", srv.log_text()
    logs = srv.health()["setup"]["logs"]
    pieces = re.findall(r"^\[coglet::setup\] (\u20ac+)$", logs, re.M)
    assert "".join(pieces) == "\u20ac" * 6667, [len(p) for p in pieces]
    assert [len(p.encode()) for p in pieces] == [4095] * 4 + [20001 - 4 * 4095]
    logged = [m for m in srv.messages() if isinstance(m, str) and m.startswith("\u20ac")]
    assert logged == pieces
