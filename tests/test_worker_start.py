"""How the worker starts (docs/architecture.md#how-the-worker-starts): forked from the parent
when that is safe, else spawned as `sys.executable -c ...`; either way the predictor sees the
same process: its argv, executable, pid, `__main__`, `sys.path[0]`, signal dispositions, and
cog in `sys.modules` only once it imports it, even under the cog launcher, whose parent
imported cog. Real servers, both launchers."""

import os
import signal
import sys

import pytest

from conftest import launch

OBSERVE = """
import atexit
import os
import signal
import sys

import coglet

SEEN_AT_IMPORT = {"cog": "cog" in sys.modules, "requests": "requests" in sys.modules}


def _disposition(sig):
    h = signal.getsignal(sig)
    return h.name if isinstance(h, signal.Handlers) else ("python" if callable(h) else repr(h))


class Predictor:
    def predict(self, later: str = "") -> dict:
        out = {
            "argv": sys.argv,
            "orig_argv_tail": sys.orig_argv[1:],
            "executable": sys.executable,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "main_has_file": hasattr(sys.modules["__main__"], "__file__"),
            "main_name": sys.modules["__main__"].__name__,
            "path0": sys.path[0],
            "signals": {name: _disposition(getattr(signal, name))
                        for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE", "SIGUSR1", "SIGCHLD")},
            "active": coglet.server.active,
            "at_import": SEEN_AT_IMPORT,
            "stdout_buffered": not sys.__stdout__.line_buffering,
            "stdin_name": sys.__stdin__.name,
            "fds_open": sorted(int(f) for f in os.listdir("/proc/self/fd")),
        }
        if later:
            import cog
            import cog.types

            out["later"] = {"cog": "cog" in sys.modules, "types": sys.modules.get("cog.types") is cog.types,
                            "has_path": hasattr(cog, "Path")}
        return out
"""


def observe(tmp_path, start, launcher_kind, later=""):
    where = tmp_path / ("%s-%s" % (start, launcher_kind))
    where.mkdir()
    env = {"COGLET_WORKER_START": start, "COG_LOG_LEVEL": "debug"}
    launcher = None
    if launcher_kind == "cog":
        env.update({"PORT": "0", "COG_PREDICT_TYPE_STUB": "predict.py:Predictor"})
        launcher = [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"]
    srv = launch(where, code=OBSERVE, env=env, launcher=launcher)
    try:
        assert srv.health()["status"] == "READY", srv.log_text()
        r = srv.predict({"later": later})
        body = r.json()
        assert body["status"] == "succeeded", body
        out = body["output"]
        out["server_pid"] = srv.proc.pid
        out["how"] = "fork" if any("worker start: fork" in m for m in srv.messages()) else "spawn"
        return out
    finally:
        srv.stop()


@pytest.mark.parametrize("launcher_kind", ["coglet", "cog"])
def test_forked_worker_looks_like_a_spawned_one(tmp_path, launcher_kind):
    forked = observe(tmp_path, "", launcher_kind)
    spawned = observe(tmp_path, "spawn", launcher_kind)
    assert forked["how"] == "fork" and spawned["how"] == "spawn", (forked, spawned)
    for out in (forked, spawned):
        assert out["argv"] == ["-c"]
        assert out["orig_argv_tail"] == ["-c", "import coglet; coglet.server._run_worker()"]
        assert out["executable"] == sys.executable
        assert out["pid"] != out["server_pid"] and out["ppid"] == out["server_pid"]
        assert out["main_name"] == "__main__" and out["main_has_file"] is False
        assert out["path0"] == ""
        assert out["signals"] == {"SIGINT": "SIG_IGN", "SIGTERM": "SIG_DFL", "SIGHUP": "SIG_DFL",
                                  "SIGPIPE": "SIG_IGN", "SIGUSR1": "SIG_DFL", "SIGCHLD": "SIG_DFL"}, out
        assert out["active"] is True
        # the parent under the cog launcher imported cog (and requests): hidden until imported
        assert out["at_import"] == {"cog": False, "requests": False}
        assert out["stdout_buffered"] is True and out["stdin_name"] == "<stdin>"
        assert out["fds_open"][:3] == [0, 1, 2]
    # nothing of the parent's leaks in: the same descriptors as a spawned worker
    assert len(forked["fds_open"]) == len(spawned["fds_open"]), (forked["fds_open"], spawned["fds_open"])
    keys = set(forked) - {"pid", "ppid", "server_pid", "how", "fds_open"}
    assert {k: forked[k] for k in keys} == {k: spawned[k] for k in keys}


def test_hidden_modules_come_back_when_imported(tmp_path):
    out = observe(tmp_path, "", "cog", later="yes")
    assert out["how"] == "fork"
    assert out["at_import"] == {"cog": False, "requests": False}
    assert out["later"] == {"cog": True, "types": True, "has_path": True}


def test_signals_reset_even_when_the_parent_ignores_them(tmp_path):
    # await_explicit_shutdown ignores SIGTERM in the parent; SIGHUP ignored as under nohup
    (tmp_path / "predict.py").write_text(OBSERVE)
    code = ("import signal, coglet\n"
            "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
            "coglet.server.serve(predictor_ref='predict.py:Predictor', host='127.0.0.1', port=0,\n"
            "                    await_explicit_shutdown=True)\n")
    seen = {}
    for start in ("", "spawn"):
        srv = launch(tmp_path, env={"COG_LOG_LEVEL": "debug", "COGLET_WORKER_START": start},
                     launcher=[sys.executable, "-c", code])
        try:
            assert srv.health()["status"] == "READY", srv.log_text()
            seen[start or "fork"] = srv.predict({}).json()["output"]["signals"]
            assert any(("worker start: " + (start or "fork")) in m for m in srv.messages()), srv.log_text()
        finally:
            srv.stop(signal.SIGINT)
    assert seen["fork"] == seen["spawn"] == {"SIGINT": "SIG_IGN", "SIGTERM": "SIG_DFL", "SIGHUP": "SIG_DFL",
                                             "SIGPIPE": "SIG_IGN", "SIGUSR1": "SIG_DFL", "SIGCHLD": "SIG_DFL"}


def test_threads_in_the_parent_mean_spawn(tmp_path):
    (tmp_path / "predict.py").write_text(OBSERVE)
    code = ("import threading, time, coglet\n"
            "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "coglet.server.serve(predictor_ref='predict.py:Predictor', host='127.0.0.1', port=0)\n")
    srv = launch(tmp_path, env={"COG_LOG_LEVEL": "debug"}, launcher=[sys.executable, "-c", code])
    try:
        assert srv.health()["status"] == "READY", srv.log_text()
        srv.wait_log(r"worker start: spawn \(2 threads running\)")
        body = srv.predict({}).json()
        assert body["status"] == "succeeded", body
        assert body["output"]["argv"] == ["-c"]
    finally:
        srv.stop()


def test_interpreter_options_mean_spawn(tmp_path):
    (tmp_path / "predict.py").write_text(OBSERVE)
    srv = launch(tmp_path, env={"COG_LOG_LEVEL": "debug"},
                 launcher=[sys.executable, "-X", "utf8", "-m", "coglet", "predict.py:Predictor", "--port", "0",
                           "--host", "127.0.0.1"])
    try:
        assert srv.health()["status"] == "READY", srv.log_text()
        srv.wait_log(r"worker start: spawn \(interpreter options")
    finally:
        srv.stop()


CRASH = """
import os


class Predictor:
    def predict(self, how: str = "exit") -> str:
        if how == "exit":
            os._exit(7)
        os.kill(os.getpid(), 9)
        return "never"
"""


@pytest.mark.parametrize("how,text", [("exit", "Worker crashed: exited with code 7"),
                                      ("kill", "Worker crashed: killed by signal 9 (SIGKILL)")])
def test_forked_worker_exit_is_seen(make_server, how, text):
    srv = make_server(code=CRASH, env={"COG_LOG_LEVEL": "debug"})
    assert srv.health()["status"] == "READY", srv.log_text()
    assert any("worker start: fork" in m for m in srv.messages())
    body = srv.predict({"how": how}).json()
    assert body["status"] == "failed" and body["error"] == text, body
    assert srv.wait_status("DEFUNCT")["status"] == "DEFUNCT"
    assert srv.stop() == 0
    assert not srv.worker_pids()


def test_forked_worker_exits_on_shutdown(make_server):
    srv = make_server(code=OBSERVE, env={"COG_LOG_LEVEL": "debug"})
    assert srv.health()["status"] == "READY", srv.log_text()
    pid = srv.predict({}).json()["output"]["pid"]
    assert srv.stop(signal.SIGTERM) == 0
    # the worker is gone too, not a zombie of ours left running
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    assert state in ("gone", "Z", "X"), state

