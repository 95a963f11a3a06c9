"""The Python surface of the package (docs/python-api.md): what `import coglet` exposes, in this
process (the parent side) and inside the worker, and that the real cog SDK imports on top."""

import re
import subprocess
import sys

import pytest

import coglet
from conftest import SLOW

PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
BUILD_REPR = re.compile(
    r"^BuildInfo\(version='([^']*)', git_sha='([^']*)', dirty=(True|False), "
    r"build_time='([^']*)', rustc_version='([^']*)'\)$"
)


# ---- __version__ / __build__ ----


def test_version_is_pep440_string():
    assert isinstance(coglet.__version__, str)
    assert PEP440.match(coglet.__version__), coglet.__version__


def test_build_info_properties():
    b = coglet.__build__
    assert type(b).__name__ == "BuildInfo"
    assert type(b).__module__ == "coglet"
    assert b.version == coglet.__version__
    assert isinstance(b.git_sha, str) and b.git_sha
    assert isinstance(b.dirty, bool)
    assert b.build_time == "unknown" or re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", b.build_time), b.build_time
    assert isinstance(b.rustc_version, str) and b.rustc_version


def test_build_info_repr_format():
    b = coglet.__build__
    m = BUILD_REPR.match(repr(b))
    assert m, repr(b)
    assert m.group(1) == b.version
    assert m.group(2) == b.git_sha
    assert m.group(3) == str(b.dirty)
    assert m.group(4) == b.build_time
    assert m.group(5) == b.rustc_version


@pytest.mark.parametrize("attr", ["version", "git_sha", "dirty", "build_time", "rustc_version", "foo"])
def test_build_info_is_frozen(attr):
    with pytest.raises(AttributeError):
        setattr(coglet.__build__, attr, "x")
    assert coglet.__build__.version == coglet.__version__


def test_build_info_not_constructible():
    with pytest.raises(TypeError):
        type(coglet.__build__)()


# ---- coglet.server ----


def test_server_singleton_repr_and_class():
    assert repr(coglet.server) == "coglet.server"
    assert type(coglet.server).__name__ == "Server"
    assert type(coglet.server).__module__ == "coglet"
    assert coglet._impl.server is coglet.server


@pytest.mark.parametrize("attr", ["foo", "active", "serve"])
def test_server_is_frozen(attr):
    with pytest.raises(AttributeError):
        setattr(coglet.server, attr, 1)


def test_server_inactive_in_parent():
    assert coglet.server.active is False


def test_serve_alias():
    assert callable(coglet.serve)
    assert coglet.serve == coglet.server.serve
    assert coglet.serve.__self__ is coglet.server
    assert callable(coglet.server._run_worker)


def test_server_active_in_fresh_process_is_false(tmp_path):
    # cwd elsewhere than the source tree, so the installed package is the one imported
    out = subprocess.run(
        [sys.executable, "-c", "import coglet; print(coglet.server.active)"],
        capture_output=True, text=True, timeout=30 * SLOW, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---- CancelationException ----


def test_cancelation_exception_is_base_exception_only():
    exc = coglet.CancelationException
    assert issubclass(exc, BaseException)
    assert not issubclass(exc, Exception)
    assert exc.__name__ == "CancelationException"
    assert exc.__module__ == "coglet"
    assert (exc.__doc__ or "").startswith("Raised when a running prediction or training is cancelled.")


def test_cancelation_exception_not_caught_by_except_exception():
    caught = None
    try:
        try:
            raise coglet.CancelationException()
        except Exception:  # must not catch it
            caught = "Exception"
    except BaseException as e:
        caught = type(e).__name__
    assert caught == "CancelationException"


# ---- coglet._sdk ----


@pytest.mark.parametrize("name", ["current_scope", "Scope", "MetricRecorder", "_SlotLogWriter", "_TeeWriter"])
def test_sdk_members(name):
    assert hasattr(coglet._sdk, name), dir(coglet._sdk)
    assert coglet._impl._sdk is coglet._sdk


@pytest.mark.parametrize("name", ["Scope", "MetricRecorder", "_SlotLogWriter", "_TeeWriter"])
def test_sdk_class_modules(name):
    assert getattr(coglet._sdk, name).__module__ == "coglet._sdk"


def test_sdk_docstring():
    assert (coglet._sdk.__doc__ or "").startswith("Internal SDK runtime integration for coglet.")


def test_current_scope_outside_prediction_is_noop_scope():
    scope = coglet._sdk.current_scope()
    assert scope is not None
    assert repr(scope) == "Scope(MetricRecorder(inactive))"
    assert scope.context == {}
    scope.record_metric("temperature", 0.5)  # silently accepted


def test_all_lists_public_names_only():
    assert coglet.__all__ == ["__version__", "__build__", "server", "CancelationException"]
    assert "_sdk" not in coglet.__all__
    assert "_impl" not in coglet.__all__
    assert coglet._impl.__all__ == ["__version__", "__build__", "server"]
    for name in coglet.__all__:
        assert getattr(coglet, name) is not None


def test_impl_attributes_match_package():
    impl = coglet._impl
    assert impl.__version__ == coglet.__version__
    assert impl.__build__ is coglet.__build__
    assert impl.CancelationException is coglet.CancelationException


# ---- the real cog SDK on top of ours ----


@pytest.mark.parametrize("order", ["coglet first", "cog first"])
def test_cog_sdk_imports_on_top(order, tmp_path):
    imports = "import coglet; import cog" if order == "coglet first" else "import cog; import coglet"
    code = (
        imports + "\n"
        "assert cog.CancelationException is coglet.CancelationException\n"
        "from cog import BasePredictor, BaseRunner, Input, Path\n"
        "print(cog.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60 * SLOW,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.23.1"


# ---- inside the worker ----

WORKER_PROBE = """
import sys
import coglet


class Predictor:
    def predict(self, what: str = "active"):
        if what == "active":
            return coglet.server.active
        if what == "stdout":
            return [type(sys.stdout).__name__, type(sys.stderr).__name__]
        if what == "cancel":
            import cog
            return cog.CancelationException is coglet.CancelationException
        raise ValueError(what)
"""


@pytest.fixture(scope="module")
def probe(make_module_server):
    return make_module_server(code=WORKER_PROBE)


def test_server_active_inside_worker(probe):
    r = probe.predict({"what": "active"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "succeeded", body
    assert body["output"] is True
    # and still False here, in the test process
    assert coglet.server.active is False


def test_worker_stdout_is_slot_log_writer(probe):
    body = probe.predict({"what": "stdout"}).json()
    assert body["status"] == "succeeded", body
    assert body["output"] == ["_SlotLogWriter", "_SlotLogWriter"]


def test_cog_cancelation_exception_is_ours_inside_worker(probe):
    body = probe.predict({"what": "cancel"}).json()
    assert body["status"] == "succeeded", body
    assert body["output"] is True
