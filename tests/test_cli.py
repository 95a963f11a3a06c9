"""Launching and stopping: `python -m coglet` (with and without REF), the cog SDK's
`python -m cog.server.http` launcher, signals and the startup/shutdown log lines (docs/logging.md#startup-and-shutdown-lines,
docs/python-api.md#command-lines, docs/http-api.md#shutdown)."""

import json
import signal
import subprocess
import sys
import time

import pytest
import requests

import coglet
from conftest import SLOW, free_port

PREDICTOR = """
class Predictor:
    def setup(self):
        print("cli setup ran")

    def predict(self, name: str = "cli") -> str:
        print("hi " + name)
        return "hello " + name
"""


def message_lines(srv):
    out = []
    for line in list(srv.lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def wait_gone(pid, timeout=20):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError("process %d still alive" % pid)


# ---- python -m coglet ----


def test_help(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "coglet", "--help"], capture_output=True, text=True, timeout=30 * SLOW, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "--port" in out.stdout
    assert "--host" in out.stdout


def test_no_ref_and_no_cog_yaml_is_an_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "coglet", "--port", "0"], capture_output=True, text=True, timeout=30 * SLOW,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "cog.yaml" in out.stderr


def test_ref_from_cog_yaml(make_server):
    s = make_server(
        code=PREDICTOR,
        ref=None,
        files={"cog.yaml": 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'},
    )
    assert s.health()["status"] == "READY", s.log_text()
    body = s.predict({"name": "yaml"}).json()
    assert body["status"] == "succeeded", body
    assert body["output"] == "hello yaml"
    using = [m for m in message_lines(s) if m["fields"].get("message") == "Using subprocess isolation"]
    assert using and using[0]["fields"]["predictor_ref"] == "predict.py:Predictor", using


def test_starting_line_has_real_port(make_server):
    s = make_server(code=PREDICTOR)
    assert s.port and s.port != 0
    msgs = s.messages()
    assert "Starting coglet server on 127.0.0.1:%d" % s.port in msgs, msgs
    assert msgs.count("Starting coglet server on 127.0.0.1:%d" % s.port) == 1
    assert requests.get("http://127.0.0.1:%d/health-check" % s.port, timeout=10 * SLOW).status_code == 200


def test_startup_log_lines_in_order(make_server):
    s = make_server(code=PREDICTOR)
    s.wait_log("Setup complete, now accepting requests")
    msgs = s.messages()
    wanted = [
        "coglet %s (" % coglet.__version__,
        "python sdk 0.23.1",
        "python %s" % sys.version.split()[0],
        "Using subprocess isolation",
        "Configuring subprocess worker via orchestrator",
        "Starting coglet server on 127.0.0.1:%d" % s.port,
        "Spawning worker subprocess",
        "Server ready",
        "Setup complete, now accepting requests",
    ]
    pos = -1
    for w in wanted:
        idx = next((i for i, m in enumerate(msgs) if i > pos and m.startswith(w)), None)
        assert idx is not None, (w, msgs)
        pos = idx
    assert sum(m == "Spawning worker subprocess" for m in msgs) == 1, msgs
    recs = message_lines(s)
    ready = [r for r in recs if r["fields"].get("message") == "Server ready"][0]
    assert ready["fields"]["num_slots"] == 1
    assert ready["fields"]["mode"] == "predict"
    assert ready["level"] == "INFO"
    # every line on stderr is a JSON record
    for line in s.lines:
        rec = json.loads(line)
        assert set(rec) >= {"timestamp", "level", "fields", "target"}, line


def test_console_log_format(make_server):
    s = make_server(code=PREDICTOR, env={"LOG_FORMAT": "console"})
    line = s.wait_log("Starting coglet server on")
    with pytest.raises(ValueError):
        json.loads(line)
    assert "INFO" in line


# ---- signals and shutdown ----


@pytest.mark.parametrize("sig,name", [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_signal_stops_server(make_server, sig, name):
    s = make_server(code=PREDICTOR)
    assert s.predict().json()["status"] == "succeeded"
    workers = s.worker_pids()
    assert len(workers) == 1
    s.proc.send_signal(sig)
    assert s.proc.wait(timeout=20 * SLOW) == 0
    s.wait_log("Received %s, shutting down" % name)
    s.wait_log("Server shutdown complete")
    # the worker goes too
    wait_gone(workers[0])
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/health-check", timeout=5 * SLOW)


def test_sigint_during_setup(make_server, tmp_path):
    s = make_server(
        code="""
        import os, time
        class Predictor:
            def setup(self):
                deadline = time.time() + 60
                while not os.path.exists("go") and time.time() < deadline:
                    time.sleep(0.02)
            def predict(self) -> str:
                return "x"
        """,
        ready=False,
    )
    assert s.health()["status"] == "STARTING"
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=20 * SLOW) == 0
    s.wait_log("Server shutdown complete")
    (tmp_path / "go").write_text("")


def test_shutdown_waits_for_inflight_sync_prediction(make_server, tmp_path):
    gate = tmp_path / "gate"
    s = make_server(
        code="""
        import os, time
        class Predictor:
            def predict(self, gate: str) -> str:
                print("waiting on gate", flush=True)
                deadline = time.time() + 60
                while not os.path.exists(gate) and time.time() < deadline:
                    time.sleep(0.01)
                return "finished"
        """
    )
    import threading

    result = {}
    t = threading.Thread(
        target=lambda: result.update(
            r=requests.post(s.url + "/predictions", json={"input": {"gate": str(gate)}}, timeout=60 * SLOW)
        )
    )
    t.start()
    s.wait_log("waiting on gate")
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("Received SIGTERM, shutting down")
    assert s.proc.poll() is None  # still serving the in-flight request
    gate.write_text("")
    t.join(60 * SLOW)
    assert result["r"].status_code == 200
    assert result["r"].json()["output"] == "finished"
    assert s.proc.wait(timeout=20 * SLOW) == 0


# ---- python -m cog.server.http (the cog SDK's launcher) ----


def test_cog_server_http_launcher(make_server):
    port = free_port()
    s = make_server(
        code=PREDICTOR,
        env={"COG_PREDICT_TYPE_STUB": "predict.py:Predictor", "PORT": str(port)},
        launcher=[sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
    )
    assert s.port == port
    assert "Starting coglet server on 127.0.0.1:%d" % port in s.messages()
    assert s.health()["status"] == "READY", s.log_text()
    body = s.predict({"name": "launcher"}).json()
    assert body["status"] == "succeeded", body
    assert body["output"] == "hello launcher"
    assert body["logs"] == "hi launcher\n"
    assert s.stop(signal.SIGTERM) == 0
    s.wait_log("Server shutdown complete")


def test_cog_server_http_version_flag(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cog.server.http", "--version"], capture_output=True, text=True,
        timeout=30 * SLOW, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert coglet.__version__ in out.stdout


def test_sigint_stops_even_when_started_with_it_ignored(tmp_path):
    """A shell's background job starts with SIGINT ignored; SIGINT must still shut down
    (docs/python-api.md#serve-and-threads), so serve() installs its own handler."""
    import signal as _signal
    import subprocess as _subprocess
    import sys as _sys

    from conftest import PORT_RE, SLOW

    (tmp_path / "predict.py").write_text("class Predictor:\n    def predict(self) -> str:\n        return 'ok'\n")
    proc = _subprocess.Popen(
        [_sys.executable, "-m", "coglet", "predict.py:Predictor", "--port", "0", "--host", "127.0.0.1"],
        cwd=str(tmp_path), stderr=_subprocess.PIPE, stdout=_subprocess.DEVNULL,
        preexec_fn=lambda: _signal.signal(_signal.SIGINT, _signal.SIG_IGN),
    )
    try:
        for raw in iter(proc.stderr.readline, b""):
            if PORT_RE.search(raw.decode("utf-8", "replace")):
                break
        proc.send_signal(_signal.SIGINT)
        assert proc.wait(timeout=20 * SLOW) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
