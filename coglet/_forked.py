"""The worker forked from the parent instead of spawned (docs/architecture.md#how-the-worker-starts).

A spawned worker is `sys.executable -c "import coglet; coglet.server._run_worker()"`: a fresh
interpreter that imports the cog SDK again when the predictor does (~100 ms under the cog
launcher, whose parent imported it already). Forked before the server starts any thread, the
worker starts with what the parent imported, and this module makes the rest look like the
fresh interpreter a spawned worker would have been: its argv, `__main__`, `sys.path[0]`,
standard streams, signal handlers and atexit handlers; the third-party modules the parent
imported are hidden and come back, all at once and without running again, the first time the
worker imports one of them (so `cog` is in `sys.modules` only once the predictor imports it).
"""

import os
import sys

SPAWN_ARGV = [sys.executable, "-c", "import coglet; coglet.server._run_worker()"]


def decide():
    """'' when the worker may be forked from this process; else why it is spawned."""
    mode = os.environ.get("COGLET_WORKER_START", "")
    if mode == "spawn":
        return "COGLET_WORKER_START=spawn"
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError as e:
        return "cannot count threads: %s" % e
    if threads != 1:
        return "%d threads running" % threads
    argv = getattr(sys, "orig_argv", None) or []
    if len(argv) < 2 or (argv[1] not in ("-m", "-c") and argv[1].startswith("-")):
        return "interpreter options %r" % argv[1:2]  # a spawned worker would not get them
    if not sys.executable:
        return "no sys.executable"
    # the coglet a spawned worker would import (cwd first, as `-c` puts it) must be this one
    import importlib.machinery

    coglet = sys.modules.get("coglet")
    spec = importlib.machinery.PathFinder.find_spec("coglet", [os.getcwd()] + sys.path[1:])
    mine = getattr(coglet, "__file__", None)
    if spec is None or not mine or os.path.realpath(spec.origin or "") != os.path.realpath(mine):
        return "a spawned worker would import another coglet (%s)" % (spec.origin if spec else None)
    return ""


# ---- in the forked child ----


def _stdlib_dir():
    """Where the standard library lives (os.py is in it; its C modules in lib-dynload below)."""
    return os.path.dirname(os.__file__) + os.sep


def _third_party(name, module, stdlib):
    """A module a spawned worker would not have imported before the predictor: anything
    with a file outside the standard library, except coglet itself."""
    if module is None or name == "__main__" or name == "coglet" or name.startswith("coglet."):
        return False
    path = getattr(module, "__file__", None)
    if not path:
        return False  # built in, frozen, or a namespace package
    return not path.startswith(stdlib) or (os.sep + "site-packages" + os.sep) in path


class _Hidden:
    """A meta path finder holding the parent's third-party modules: the first import of any
    of them puts them all back into sys.modules (a spawned worker importing cog gets cog's
    whole import closure too) and returns that module, not a new one."""

    def __init__(self, modules):
        self.modules = modules

    def find_spec(self, name, path=None, target=None):
        if name not in self.modules:
            return None
        import importlib.machinery

        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        module = self.modules.pop(name)
        for other, mod in self.modules.items():
            sys.modules.setdefault(other, mod)
        self.modules = {name: module}
        return importlib.machinery.ModuleSpec(name, self, origin=getattr(module, "__file__", None))

    def create_module(self, spec):
        return self.modules[spec.name]

    def exec_module(self, module):
        # module_from_spec replaced __spec__ with ours: the module's own comes back
        name = module.__spec__.name
        if self.modules.pop(name, None) is module:
            module.__spec__ = self._specs.get(name)


def _hide_third_party():
    stdlib = _stdlib_dir()
    hidden = {name: m for name, m in sys.modules.items() if _third_party(name, m, stdlib)}
    if not hidden:
        return
    finder = _Hidden(hidden)
    finder._specs = {name: getattr(m, "__spec__", None) for name, m in hidden.items()}
    for name in hidden:
        del sys.modules[name]
    sys.meta_path.insert(0, finder)


def _fresh_main():
    import builtins
    import types
    import importlib.machinery

    main = types.ModuleType("__main__")
    main.__loader__ = importlib.machinery.BuiltinImporter
    main.__spec__ = None
    main.__annotations__ = {}
    main.__builtins__ = builtins
    sys.modules["__main__"] = main


def _fresh_stdio():
    """sys.stdin/stdout/stderr as a fresh interpreter makes them on these fds (now
    /dev/null and the two pipes)."""
    import io

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, "__%s__" % name, None)
        if old is None:
            continue
        write = fd != 0
        unbuffered = write and bool(getattr(old, "write_through", False))
        raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
        raw.name = "<%s>" % name
        if unbuffered:
            buf = raw
        else:
            buf = io.BufferedWriter(raw) if write else io.BufferedReader(raw)
        line_buffering = not unbuffered and (raw.isatty() or fd == 2)
        new = io.TextIOWrapper(buf, encoding=old.encoding, errors=old.errors, newline="\n",
                               line_buffering=line_buffering, write_through=unbuffered)
        new.mode = "w" if write else "r"
        setattr(sys, "__%s__" % name, new)
        setattr(sys, name, new)


def _fresh_signals():
    """As a spawned worker starts: the spawn resets every disposition to the default and the
    mask to empty (libuv does, before exec), then Python ignores SIGPIPE and SIGXFSZ and
    installs its SIGINT handler (the worker then ignores SIGINT). faulthandler's handlers
    stay when it is enabled: a spawned worker enables it again from the same environment."""
    import _signal

    try:
        _signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    keep = set()
    fh = sys.modules.get("faulthandler")
    if fh is not None and fh.is_enabled():
        keep = {_signal.SIGSEGV, _signal.SIGFPE, _signal.SIGABRT, _signal.SIGBUS, _signal.SIGILL}
    startup = {_signal.SIGPIPE: _signal.SIG_IGN, _signal.SIGINT: _signal.default_int_handler}
    if hasattr(_signal, "SIGXFSZ"):
        startup[_signal.SIGXFSZ] = _signal.SIG_IGN
    for sig in range(1, _signal.NSIG):
        if sig in keep or sig in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            _signal.signal(sig, startup.get(sig, _signal.SIG_DFL))
        except (ValueError, OSError, RuntimeError):
            pass  # not a real signal here (the RT range holes)
    try:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    except (AttributeError, OSError):
        pass


def _prepare():
    import atexit

    sys.argv = ["-c"]
    sys.orig_argv = list(SPAWN_ARGV)
    if sys.path and not getattr(sys.flags, "safe_path", False):
        sys.path[0] = ""
    _fresh_main()
    _fresh_stdio()
    _fresh_signals()
    atexit._clear()  # the parent's: a spawned worker never registered them
    _hide_third_party()
    sys.modules.pop(__name__, None)


def run():
    """The forked child's whole life: never returns."""
    code = 0
    try:
        _prepare()
        import coglet

        coglet.server._run_worker()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: B902 - as an uncaught exception ends `python -c`
        import traceback

        traceback.print_exc()
        code = 1
    try:
        import atexit
        import threading

        threading._shutdown()  # non-daemon threads first, as interpreter exit does
        atexit._run_exitfuncs()
    except BaseException:  # noqa: B902
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: B902
            pass
    os._exit(code)
