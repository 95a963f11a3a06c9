"""`pip install .` from a clean clone builds coglet._impl, and the installed server runs
with the venv's python even when PATH points elsewhere (the worker is spawned with
sys.executable, not PATH's `python`)."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, SANITIZED, Server

pytestmark = pytest.mark.skipif(SANITIZED, reason="builds a normal wheel; the plain suite covers it")


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory):
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    base = tmp_path_factory.mktemp("install")
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True)
    venv = base / "venv"
    # system site packages give it setuptools/wheel without a download
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    out = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(clone)],
        capture_output=True,
        text=True,
        cwd=str(base),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return py


def test_clean_clone_installs_an_abi3_extension(installed_venv, tmp_path):
    out = subprocess.run(
        [str(installed_venv), "-c", "import coglet, coglet._impl as m; print(m.__file__); print(coglet.__version__)"],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    so, version = out.stdout.split()
    assert so.endswith(".abi3.so")
    assert "site-packages" in so
    assert version.count(".") == 2


def test_worker_runs_with_sys_executable_outside_an_activated_venv(installed_venv, tmp_path):
    (tmp_path / "predict.py").write_text(
        textwrap.dedent(
            """
            import sys
            class Predictor:
                def predict(self) -> str:
                    return sys.executable
            """
        )
    )
    env = {"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": None, "PYTHONPATH": None}
    launcher = [str(installed_venv), "-m", "coglet", "predict.py:Predictor", "--port", "0", "--host", "127.0.0.1"]
    srv = Server(tmp_path, [], env=env, launcher=launcher)
    try:
        srv.wait_status("READY", "SETUP_FAILED")
        assert srv.health()["status"] == "READY", srv.log_text()
        r = srv.predict()
        assert r.status_code == 200
        assert r.json()["output"] == str(installed_venv)
    finally:
        srv.stop()


def test_build_names_the_missing_debian_package(tmp_path):
    """With pkg-config unable to find a library the build stops with one clear line."""
    if shutil.which("pkg-config") is None:
        pytest.skip("no pkg-config")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pkg-config").write_text("#!/bin/sh\nexit 1\n")
    (fake / "pkg-config").chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (fake, os.environ["PATH"]))
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "setup.py"), "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode != 0
    assert "coglet build: libuv not found by pkg-config: apt-get install libuv1-dev" in out.stderr
    assert "Traceback" not in out.stderr
