"""Python-side helpers for the C worker (coglet._impl, csrc/worker/).

The worker's protocol, threads and hot path are C. What lives here is what is naturally
Python and runs rarely or only for non-JSON-native values: loading the predictor (through
the cog SDK when it is installed, else the same rules without it), setup, input coercion
for File/Path/Secret fields, and encoding of objects that are not plain JSON values.
"""

import io
import os
import sys
import threading
import types

# base64, dataclasses, enum, inspect, json, mimetypes, shutil, tempfile and typing are
# imported where they are used: inspect and json alone cost ~6 ms (ast, dis, tokenize, re),
# most predictors never need them here, and worker start-up is part of time-to-READY.

from coglet import CancelationException

SYNC, ASYNC, GENERATOR, ASYNC_GENERATOR = "sync", "async", "generator", "async_generator"


_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200


def _code_flags(fn):
    """co_flags of a plain function (through bound methods and functools.partial), as
    inspect reads them; None for anything else."""
    import functools

    while True:
        if isinstance(fn, types.MethodType):
            fn = fn.__func__
        elif isinstance(fn, functools.partial):
            fn = fn.func
        else:
            break
    return fn.__code__.co_flags if isinstance(fn, types.FunctionType) else None


def _kind(fn):
    flags = None if "inspect" in sys.modules else _code_flags(fn)
    if flags is None:  # inspect is loaded (cog imports it), or not a plain function
        import inspect

        if inspect.isasyncgenfunction(fn):
            return ASYNC_GENERATOR
        if inspect.iscoroutinefunction(fn):
            return ASYNC
        if inspect.isgeneratorfunction(fn):
            return GENERATOR
        return SYNC
    if flags & _CO_ASYNC_GENERATOR:
        return ASYNC_GENERATOR
    if flags & _CO_COROUTINE:
        return ASYNC
    if flags & _CO_GENERATOR:
        return GENERATOR
    return SYNC


def _is_coroutine_function(fn):
    return _kind(fn) == ASYNC


def pyerr(exc):
    """`{type qualname}: {str(exc)}`, the form of every error string clients see
    (docs/http-api.md#error-strings)."""
    return "%s: %s" % (type(exc).__qualname__, exc)


# ---- loading ----
#
# cog is used only once the predictor's own module has imported it: importing it costs
# ~190 ms of worker start-up (requests, urllib3...), and a predictor that never imports
# cog cannot use its types. asyncio (~70 ms) is imported when an async piece needs it.


def _cog_loaded():
    return "cog" in sys.modules


def _user_method_owner(cls, name):
    stop = {object}
    if _cog_loaded():
        try:
            import cog.predictor as cp

            stop = {cp.BaseRunner, cp.BasePredictor, object}
        except Exception:
            pass
    for owner in cls.__mro__:
        if owner in stop:
            break
        if callable(owner.__dict__.get(name)):
            return owner
    return None


def _load_without_cog(ref):
    import importlib.util

    module_path, _, name = ref.partition(":")
    module_name = os.path.basename(module_path).replace(".py", "")
    spec = importlib.util.spec_from_file_location(module_name, module_path)
    if spec is None or spec.loader is None:
        raise ImportError("Cannot load module from %s" % module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if not name:
        # cog.predictor.load_predictor_from_ref's choice: a valid Runner, else Predictor
        runner = getattr(module, "Runner", None)
        runner_error = None
        if isinstance(runner, type):
            try:
                _check_runner_class(runner, "Runner")
            except ValueError as e:
                runner_error = e
        elif runner is not None and not callable(runner):
            runner_error = TypeError("Runner exists but is not a class or callable")
        if runner is not None and runner_error is None:
            name = "Runner"
        elif hasattr(module, "Predictor"):
            name = "Predictor"
        elif runner_error is not None:
            raise runner_error
        else:
            raise AttributeError("module %r has no Runner or Predictor" % module_name)
    obj = getattr(module, name)
    if isinstance(obj, type):
        _check_runner_class(obj, name)
        return obj()
    return obj


def _check_runner_class(cls, name):
    run, predict = _user_method_owner(cls, "run"), _user_method_owner(cls, "predict")
    if run and predict:
        raise ValueError("%s must define either run() or predict(), not both" % name)
    if not run and not predict:
        raise ValueError("run or predict method not found: %s" % name)


def _resolve_ref(ref):
    """Accepts every reference form of docs/python-api.md#serve: `predict.py:Predictor`,
    `predict.py`, `pkg.module:Predictor`, `pkg.module`."""
    path, sep, name = ref.partition(":")
    if path.endswith(".py") or os.path.sep in path or os.path.exists(path):
        return ref
    # a dotted module name: find its file
    import importlib.util

    spec = importlib.util.find_spec(path)
    if spec is None or not spec.origin:
        raise ImportError("Cannot find module %s" % path)
    return spec.origin + (sep + name if sep else "")


def _unwrap_field_defaults(fn):
    if not _cog_loaded():
        return  # no cog, no Input(...) defaults
    try:
        from cog.input import FieldInfo
    except Exception:
        return
    func = getattr(fn, "__func__", fn)
    if not hasattr(func, "__coglet_input_defaults__"):
        # kept for the schema generator, which needs the Input(...) metadata
        func.__coglet_input_defaults__ = (func.__defaults__, func.__kwdefaults__)
    if func.__defaults__:
        func.__defaults__ = tuple(d.default if isinstance(d, FieldInfo) else d for d in func.__defaults__)
    if func.__kwdefaults__:
        func.__kwdefaults__ = {
            k: (d.default if isinstance(d, FieldInfo) else d) for k, d in func.__kwdefaults__.items()
        }


class Predictor:
    """What the C worker needs to know about the loaded predictor."""

    def __init__(self, ref, is_train):
        ref = _resolve_ref(ref)
        # the same rules as cog.predictor.load_predictor_from_ref, without importing cog
        self.instance = _load_without_cog(ref)
        self.is_function = isinstance(self.instance, types.FunctionType)
        if self.is_function:
            method, self.method_name = self.instance, "standalone function"
        else:
            cls = type(self.instance)
            run, predict = _user_method_owner(cls, "run"), _user_method_owner(cls, "predict")
            if run and predict:
                raise ValueError("predictor must define either run() or predict(), not both")
            if not run and not predict:
                raise ValueError("run() or predict() method not found on predictor")
            self.method_name = "run" if run else "predict"
            method = getattr(self.instance, self.method_name)
        self.predict_method = method
        self.train = None
        if is_train:
            self.train = self.instance if self.is_function else getattr(self.instance, "train", None)
            if self.train is not None:
                method, self.method_name = self.train, "train"
                _unwrap_field_defaults(self.predict_method)
        self.method = method
        self.kind = _kind(method) if method is not None else SYNC
        if method is not None:
            _unwrap_field_defaults(method)
        self.is_async = self.kind in (ASYNC, ASYNC_GENERATOR)
        self.healthcheck = None if self.is_function else getattr(self.instance, "healthcheck", None)
        self.setup_fn = None if self.is_function else getattr(self.instance, "setup", None)
        self.coercions = _coercions(method) if method is not None else {}
        self.training_unsupported = is_train and self.train is None
        self.loop = None

    # ---- setup ----

    def event_loop(self):
        """One asyncio loop in its own thread, shared by async setup and predictions."""
        if self.loop is None:
            import asyncio

            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run():
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="coglet-asyncio", daemon=True).start()
            started.wait()
            self.loop = loop
        return self.loop

    def setup(self):
        if self.setup_fn is None:
            return
        args = ()
        try:
            if not _cog_loaded():
                raise ImportError("cog not in use")
            from cog.predictor import extract_setup_weights, has_setup_weights

            if has_setup_weights(self.instance):
                args = (extract_setup_weights(self.instance),)
        except ImportError:
            import inspect

            params = inspect.signature(self.setup_fn).parameters
            if "weights" in params:
                args = (os.environ.get("COG_WEIGHTS"),)
        if _is_coroutine_function(self.setup_fn):
            import asyncio

            fut = asyncio.run_coroutine_threadsafe(self.setup_fn(*args), self.event_loop())
            fut.result()
        else:
            self.setup_fn(*args)

    # ---- user healthcheck (docs/worker-protocol.md#health-checks) ----

    def run_healthcheck(self):
        """(status, error) of the user's healthcheck(): only a returned False is unhealthy;
        5 s timeout; an exception is unhealthy with its text."""
        hc = self.healthcheck
        if hc is None:
            return ("healthy", None)
        import asyncio
        import concurrent.futures

        timed_out = "Healthcheck failed: user-defined healthcheck timed out after 5.0 seconds"
        try:
            if _is_coroutine_function(hc):
                fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(hc(), 5.0), self.event_loop())
                result = fut.result(6.0)
            else:
                pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="coglet-healthcheck")
                fut = pool.submit(hc)
                pool.shutdown(wait=False)  # a hung healthcheck thread is abandoned
                result = fut.result(5.0)
        except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
            return ("unhealthy", timed_out)
        except BaseException as e:  # noqa: B902 - any failure is an unhealthy answer
            return ("unhealthy", "Healthcheck failed: " + pyerr(e))
        if result is False:
            return ("unhealthy", "Healthcheck failed: user-defined healthcheck returned False")
        return ("healthy", None)


# ---- async predictions (csrc/worker/run_async.c) ----
#
# The event loop reads the slot sockets itself; each predict frame becomes a Task running
# one of these coroutines, in a context that holds the prediction's id and metric scope.
# `run` is the prediction (a C object): it sends outputs and the terminal message itself.


def _in_thread(fn, *args):
    """fn(*args) on the loop's executor, in a copy of this Task's context (so that logs and
    metrics stay with the prediction): blocking work stays off the loop."""
    import asyncio
    import contextvars

    return asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, fn, *args)


def task_starter(loop, runner, pred_id_var, scope_var):
    """start(run, coro, pred_id, scope) -> the Task of one prediction: runner(run, coro) in a
    new context holding the prediction's id and metric scope."""
    import asyncio
    import contextvars

    Task, Context = asyncio.Task, contextvars.Context

    def set_vars(pred_id, scope):
        pred_id_var.set(pred_id)
        scope_var.set(scope)

    def start(run, coro, pred_id, scope):
        ctx = Context()
        ctx.run(set_vars, pred_id, scope)
        if sys.version_info >= (3, 11):
            return Task(runner(run, coro), loop=loop, context=ctx)
        return ctx.run(Task, runner(run, coro), loop=loop)

    return start


async def run_async(run, coro):
    if coro is None:  # File/Path inputs: coerced (URLs downloaded) on a thread, then called
        coro = await _in_thread(run.prepare_and_call)
        if coro is None:
            return run.finish(None, None)
    if run.watch():  # cancelled before it started
        coro.close()
        return run.finish(None, None)
    try:
        result = await coro
    except BaseException as e:  # noqa: B902 - CancelledError too: the run tells them apart
        return run.finish(None, e)
    gen = run.finish(result, None)
    if gen is not None:  # a sync generator from an async method: iterated on a thread
        await _in_thread(run.stream, gen)
        run.end()


async def run_async_generator(run, agen):
    if agen is None:
        agen = await _in_thread(run.prepare_and_call)
        if agen is None:
            return run.finish(None, None)
    if run.watch():
        return run.finish(None, None)
    try:
        async for item in agen:
            run.emit(item)  # sent as it is yielded (the Rust coglet collects them all first)
    except BaseException as e:  # noqa: B902
        return run.finish(None, e)
    run.finish(None, None)


# ---- inputs (docs/files.md#inputs) ----


def _classify(annotation):
    if not _cog_loaded():
        return None  # cog's File/Path/Secret cannot be in a signature that never imported cog
    import typing

    try:
        from cog.types import File, Path, Secret
    except Exception:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Secret:
        return "secret"
    if annotation is Path:
        return "path"
    if annotation is File:
        return "file"
    if origin in (list, typing.List) and args:
        inner = args[0]
        if inner is Path:
            return "list_path"
        if inner is File:
            return "list_file"
        return None
    if args and origin is not None:  # Optional / Union / X | None
        for a in args:
            c = _classify(a)
            if c:
                return c
    return None


def _coercions(fn):
    if not _cog_loaded():
        return {}
    import typing

    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return {}
    out = {}
    for name, ann in hints.items():
        if name == "return":
            continue
        c = _classify(ann)
        if c:
            out[name] = c
    return out


_URL_PREFIXES = ("http://", "https://", "data:")


def prepare_input(pred, kwargs):
    """Coerces File/Path/Secret fields and downloads URL paths. Returns the temp files to
    delete when the prediction ends."""
    from cog.types import File, Path, Secret, URLPath

    for name, kind in pred.coercions.items():
        if name not in kwargs:
            continue
        value = kwargs[name]
        if kind == "secret":
            if isinstance(value, str):
                kwargs[name] = Secret(value)
        elif kind in ("path", "file"):
            if isinstance(value, str) and value.startswith(_URL_PREFIXES):
                kwargs[name] = (Path if kind == "path" else File).validate(value)
        elif isinstance(value, list):
            cls = Path if kind == "list_path" else File
            kwargs[name] = [
                cls.validate(v) if isinstance(v, str) and v.startswith(_URL_PREFIXES) else v for v in value
            ]
    todo = []
    for name, value in kwargs.items():
        if isinstance(value, URLPath):
            todo.append((name, None, value))
        elif isinstance(value, list) and value and all(isinstance(v, URLPath) for v in value):
            for i, v in enumerate(value):
                todo.append((name, i, v))
    temps = []
    if todo:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(_download, t[2]) for t in todo]
        failure = None
        for (name, i, _), fut in zip(todo, futures):
            try:
                path = fut.result()
            except BaseException as e:  # the first failure is reported; the rest are cleaned up
                failure = failure or e
                continue
            temps.append(path)
            if i is None:
                kwargs[name] = path
            else:
                kwargs[name][i] = path
        if failure is not None:
            cleanup(temps)
            raise failure
    return temps


def _download(urlpath):
    """URLPath.convert, except that a download that fails leaves no temp file behind."""
    import shutil
    import tempfile

    from cog.types import Path

    dest = tempfile.NamedTemporaryFile(suffix=urlpath.filename, delete=False)
    try:
        shutil.copyfileobj(urlpath.fileobj, dest)
        dest.close()
    except BaseException:
        dest.close()
        os.unlink(dest.name)
        raise
    urlpath._path = Path(dest.name)
    return urlpath._path


def cleanup(temps):
    for p in temps:
        try:
            os.unlink(p)
        except OSError:
            pass


# ---- outputs (docs/predictors.md#outputs, docs/files.md#outputs-in-the-worker) ----


def is_file_like(obj):
    return isinstance(obj, (os.PathLike, io.IOBase))


def _data_uri_of(obj):
    import base64
    import mimetypes

    if isinstance(obj, os.PathLike):
        path = os.fspath(obj)
        with open(path, "rb") as f:
            data = f.read()
        name = path
    else:
        if obj.seekable():
            obj.seek(0)
        data = obj.read()
        if isinstance(data, str):
            data = data.encode()
        name = getattr(obj, "name", "") or ""
    mime = mimetypes.guess_type(str(name))[0] or "application/octet-stream"
    return "data:%s;base64,%s" % (mime, base64.b64encode(data).decode())


def file_output(obj, output_dir, n):
    """A top-level file output handed to the parent, which makes it a data URL or uploads
    it: (absolute path, MIME type or None, whether the file is ours to delete)."""
    import mimetypes

    if isinstance(obj, os.PathLike):
        path = os.path.abspath(os.fspath(obj))
        owned = False
    else:
        os.makedirs(output_dir, exist_ok=True)
        name = str(getattr(obj, "name", "") or "")
        ext = os.path.splitext(name)[1] or ".bin"
        path = os.path.join(output_dir, "%d%s" % (n, ext))
        if obj.seekable():
            obj.seek(0)
        with open(path, "wb") as f:
            while True:
                chunk = obj.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk.encode() if isinstance(chunk, str) else chunk)
        owned = True
    return path, mimetypes.guess_type(path)[0], owned




def encode_other(obj):
    """One step of the recursive output encoding (docs/predictors.md#outputs) for a value
    that is not a JSON-native type; the C encoder recurses into what this returns."""
    import dataclasses
    import enum

    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump()
    d = getattr(obj, "dict", None)
    if callable(d) and not isinstance(obj, dict):
        return d()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset, types.GeneratorType)):
        return list(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    import datetime

    if isinstance(obj, datetime.datetime):
        return obj.isoformat()
    if isinstance(obj, (os.PathLike, io.IOBase)):
        return _data_uri_of(obj)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


# ---- sys.stdout / sys.stderr stay captured ----


def protect_std_streams(slot_writer_type, tee_writer_type):
    """A predictor that assigns sys.stdout (directly or through contextlib.redirect_stdout)
    keeps being captured: the new stream is wrapped in a _TeeWriter that writes to our
    _SlotLogWriter and to the user's stream. The Rust coglet's sys.addaudithook hook never
    fires on 3.11 for `sys.stdout = x`; a ModuleType subclass's __setattr__ on the sys
    module does (docs/worker-protocol.md#log-routing)."""

    class _CapturedSys(types.ModuleType):
        def __setattr__(self, name, value):
            if name in ("stdout", "stderr") and not isinstance(value, slot_writer_type):
                current = self.__dict__.get(name)
                writer = current.inner if isinstance(current, tee_writer_type) else current
                if isinstance(writer, slot_writer_type):
                    if value is self.__dict__.get("__%s__" % name) or value is writer:
                        value = writer  # restoring the original: just our writer again
                    elif not (isinstance(value, tee_writer_type) and value.inner is writer):
                        value = tee_writer_type(writer, value, name)
            types.ModuleType.__setattr__(self, name, value)

    if type(sys) is types.ModuleType:
        sys.__class__ = _CapturedSys


# ---- schema ----


class _InputDefaults:
    """Puts the Input(...) defaults back on the methods while a schema is generated."""

    def __init__(self, *fns):
        self.funcs = [getattr(f, "__func__", f) for f in fns if f is not None]
        self.saved = []

    def __enter__(self):
        for func in self.funcs:
            orig = getattr(func, "__coglet_input_defaults__", None)
            if orig is not None:
                self.saved.append((func, func.__defaults__, func.__kwdefaults__))
                func.__defaults__, func.__kwdefaults__ = orig
        return self

    def __exit__(self, *exc):
        for func, defaults, kwdefaults in self.saved:
            func.__defaults__, func.__kwdefaults__ = defaults, kwdefaults
        return False


def generate_schema(pred):
    from coglet import _schema

    with _InputDefaults(pred.predict_method, pred.train):
        return _schema.generate(pred.instance, pred.predict_method, train_method=pred.train)


def read_schema(pred=None):
    """The bundled .cog/openapi_schema.json (what `cog build` writes); without one, a schema
    generated from the predictor's signature (the Rust coglet serves none)."""
    path = os.path.join(".cog", "openapi_schema.json")
    try:
        with open(path, "rb") as f:
            import json

            schema = json.load(f)
        if isinstance(schema, dict):
            return schema
        print("coglet: ignoring %s: not a JSON object" % path, file=sys.stderr)
        return None
    except FileNotFoundError:
        pass
    except Exception as e:  # unparsable: no schema, said in the log
        print("coglet: ignoring unreadable %s: %s" % (path, e), file=sys.stderr)
        return None
    if pred is None:
        return None
    try:
        return generate_schema(pred)
    except Exception as e:  # a schema we cannot build is not a reason to refuse predictions
        print("coglet: cannot generate a schema from the predictor: %s" % pyerr(e), file=sys.stderr)
        return None


__all__ = ["Predictor", "CancelationException", "pyerr"]
