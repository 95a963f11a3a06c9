/* py/serve.c: coglet.server.serve(): argument checks and startup facts with the GIL, then
 * the libuv loop with the GIL released. A 100 ms timer takes the GIL back briefly so
 * Python's own signal handling (SIGINT, our SIGTERM handler) runs. */
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/build_info.h"
#include "common/log.h"
#include "common/util.h"
#include "py/module.h"
#include "py/worker_fork.h"
#include "core/core.h"
#include "http/door.h"
#include "queue/queue.h"

#define TARGET "coglet::server"

typedef struct py_serve {
    uv_loop_t loop;
    core core;
    http_door door;
    queue_door *queue; /* pull mode, when redis_url is given */
    uv_timer_t signal_timer;
    PyThreadState *saved_thread;
    int sigints;
} py_serve;

static volatile sig_atomic_t sigterm_seen, sigint_seen;

static PyObject *on_sigterm(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    sigterm_seen = 1;
    Py_RETURN_NONE;
}

static PyObject *on_sigint(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    sigint_seen = 1;
    Py_RETURN_NONE;
}

static PyMethodDef sigterm_def = {"_coglet_sigterm", on_sigterm, METH_VARARGS, NULL};
static PyMethodDef sigint_def = {"_coglet_sigint", on_sigint, METH_VARARGS, NULL};

static void signal_tick(uv_timer_t *timer) {
    py_serve *ps = container_of(timer, py_serve, signal_timer);
    PyEval_RestoreThread(ps->saved_thread); /* GIL back, briefly */
    int interrupted = 0;
    if (PyErr_CheckSignals() < 0) {
        interrupted = PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
        PyErr_Clear();
    }
    ps->saved_thread = PyEval_SaveThread();
    if (sigint_seen) {
        sigint_seen = 0;
        interrupted = 1;
    }
    if (interrupted) {
        if (ps->sigints++ == 0) {
            core_begin_shutdown(&ps->core, "Received SIGINT, shutting down...");
        } else {
            log_warn(TARGET, "Second SIGINT: cancelling everything and stopping now");
            core_force_shutdown(&ps->core);
        }
    }
    if (sigterm_seen) {
        sigterm_seen = 0;
        core_begin_shutdown(&ps->core, "Received SIGTERM, shutting down...");
    }
}

static void on_stopped(core *c) {
    py_serve *ps = container_of(c, py_serve, core);
    uv_close((uv_handle_t *)&ps->signal_timer, NULL);
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Parses an unsigned decimal without trimming; -1 when it is not one. */
static long long parse_unsigned(const char *s) {
    if (!s || !*s)
        return -1;
    long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > 1000000000LL)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* A malloc'd copy of v when it is a str (NULL otherwise); steals v, clears any error. */
static char *take_string(PyObject *v) {
    char *out = NULL;
    if (v && PyUnicode_Check(v)) {
        const char *s = PyUnicode_AsUTF8AndSize(v, NULL);
        if (s)
            out = strdup(s);
    }
    Py_XDECREF(v);
    PyErr_Clear();
    return out;
}

static char *string_attr_call(const char *expr_module, const char *attr) {
    PyObject *m = PyImport_ImportModule(expr_module);
    if (!m) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *v = PyObject_GetAttrString(m, attr);
    Py_DECREF(m);
    return take_string(v);
}

/* cog.__version__ when cog is already imported; else read from cog/_version.py without
 * importing cog (or importlib.metadata: ~6 MB of resident memory for one string). */
static char *detect_cog_version(void) {
    PyObject *modules = PySys_GetObject("modules");
    if (modules && PyDict_Check(modules) && PyDict_GetItemString(modules, "cog"))
        return string_attr_call("cog", "__version__");
    PyObject *rt = PyImport_ImportModule("coglet._versions");
    if (!rt) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *v = PyObject_CallMethod(rt, "cog_version", NULL);
    Py_DECREF(rt);
    return take_string(v);
}

static char *detect_python_version(void) {
    char *full = string_attr_call("sys", "version");
    if (full)
        full[strcspn(full, " ")] = '\0';
    return full;
}

static double env_seconds(const char *name, double fallback) {
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    double d = strtod(v, &end);
    if (*end || d < 0) {
        log_warn(TARGET, "Invalid %s value, using %.1f", name, fallback);
        return fallback;
    }
    return d;
}

static size_t stream_history(void) {
    const char *v = getenv("COG_STREAM_HISTORY_CAPACITY");
    if (!v)
        return 1024;
    long long n = parse_unsigned(v);
    if (n < 0) {
        log_warn(TARGET, "Invalid COG_STREAM_HISTORY_CAPACITY value, defaulting to 1024");
        return 1024;
    }
    return (size_t)n;
}

static int in_main_thread(void) {
    PyObject *threading = PyImport_ImportModule("threading");
    if (!threading) {
        PyErr_Clear();
        return 0;
    }
    PyObject *cur = PyObject_CallMethod(threading, "current_thread", NULL);
    PyObject *main = PyObject_CallMethod(threading, "main_thread", NULL);
    Py_DECREF(threading);
    int r = cur && main && cur == main;
    Py_XDECREF(cur);
    Py_XDECREF(main);
    PyErr_Clear();
    return r;
}

/* signal.signal(signum, handler); returns the previous handler (new ref) or NULL. */
static PyObject *set_handler(int signum, PyObject *handler) {
    PyObject *sig = PyImport_ImportModule("signal");
    if (!sig)
        return NULL;
    PyObject *prev = PyObject_CallMethod(sig, "signal", "iO", signum, handler);
    Py_DECREF(sig);
    return prev;
}

static PyObject *set_sigterm(PyObject *handler) { return set_handler(SIGTERM, handler); }

/* COG_MAX_CONCURRENCY and COG_SETUP_TIMEOUT (0: none), each with a warning when invalid. */
static void read_worker_env(int *concurrency, double *setup_timeout) {
    *concurrency = 1;
    const char *mc = getenv("COG_MAX_CONCURRENCY");
    if (mc) {
        long long v = parse_unsigned(mc);
        if (v <= 0 || v > 4096)
            log_warn(TARGET, "Invalid COG_MAX_CONCURRENCY value, defaulting to 1");
        else
            *concurrency = (int)v;
    }
    *setup_timeout = 0;
    const char *st = getenv("COG_SETUP_TIMEOUT");
    if (st) {
        long long v = parse_unsigned(st);
        if (v < 0)
            log_warn(TARGET, "Invalid COG_SETUP_TIMEOUT value, ignoring");
        else if (v == 0)
            log_warn(TARGET, "COG_SETUP_TIMEOUT=0 ignored");
        else
            *setup_timeout = (double)v;
    }
}

/* The handlers serve() replaced, put back when it returns. */
typedef struct saved_handlers {
    PyObject *sigterm, *sigint;
} saved_handlers;

/* SIGTERM and SIGINT get handlers that only set a flag, read by the timer (SIGTERM is
 * ignored instead with await_explicit_shutdown). 0, or -1 with an exception. */
static int install_handlers(saved_handlers *saved, int await_shutdown) {
    int main_thread = in_main_thread();
    if (await_shutdown) {
        PyObject *sig = PyImport_ImportModule("signal");
        PyObject *ign = sig ? PyObject_GetAttrString(sig, "SIG_IGN") : NULL;
        Py_XDECREF(sig);
        saved->sigterm = ign ? set_sigterm(ign) : NULL;
        Py_XDECREF(ign);
        if (!saved->sigterm)
            return -1;
    } else if (main_thread) {
        PyObject *h = PyCFunction_New(&sigterm_def, NULL);
        saved->sigterm = h ? set_sigterm(h) : NULL;
        Py_XDECREF(h);
        if (!saved->sigterm)
            return -1;
    }
    sigterm_seen = sigint_seen = 0;
    /* SIGINT always shuts down, even when a shell started us with it ignored: Ctrl-C must stop
     * a server in the foreground (docs/architecture.md, Parent) */
    if (main_thread) {
        PyObject *h = PyCFunction_New(&sigint_def, NULL);
        saved->sigint = h ? set_handler(SIGINT, h) : NULL;
        Py_XDECREF(h);
        PyErr_Clear();
    }
    return 0;
}

/* Puts the saved handlers back; a pending exception survives it. */
static void restore_handlers(saved_handlers *saved) {
    if (!saved->sigterm && !saved->sigint)
        return;
    PyObject *err_type, *err_value, *err_tb;
    PyErr_Fetch(&err_type, &err_value, &err_tb);
    if (saved->sigterm) {
        PyObject *r = set_sigterm(saved->sigterm);
        Py_XDECREF(r);
        Py_CLEAR(saved->sigterm);
    }
    if (saved->sigint) {
        PyObject *r = set_handler(SIGINT, saved->sigint);
        Py_XDECREF(r);
        Py_CLEAR(saved->sigint);
    }
    PyErr_Clear();
    PyErr_Restore(err_type, err_value, err_tb);
}

/* The doors (HTTP unless pull mode has no port; the queue with a redis_url) and the core on
 * one loop, run with the GIL released until shutdown. 0, or -1 with an exception set. */
/* http: serve HTTP on host:port (pull mode without a port does not) */
static int run_loop(const core_config *cfg, const char *host, int http, int port, queue_config *qcfg) {
    py_serve *ps = calloc(1, sizeof *ps);
    if (!ps) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = uv_loop_init(&ps->loop);
    if (rc != 0) {
        free(ps);
        PyErr_Format(PyExc_RuntimeError, "%s (os error %d)", strerror(-rc), -rc);
        free(log_capture_take());
        return -1;
    }
    ps->core.on_stopped = on_stopped;
    /* bound first: the "Starting coglet server on" line comes before the worker starts */
    rc = http ? http_door_start(&ps->door, &ps->core, &ps->loop, host, port, stream_history()) : 0;
    int bad_redis_url = 0; /* UV_EINVAL from the queue door is its URL's; from another step it is not */
    if (rc == 0 && qcfg->redis_url) {
        queue_config_from_env(qcfg);
        ps->queue = queue_door_start(&ps->core, &ps->loop, qcfg, &rc);
        bad_redis_url = rc == UV_EINVAL;
    }
    if (rc == 0)
        rc = core_start(&ps->core, &ps->loop, cfg);
    if (rc != 0) {
        uv_walk(&ps->loop, close_walk, NULL);
        uv_run(&ps->loop, UV_RUN_DEFAULT);
        uv_loop_close(&ps->loop);
        queue_door_free(ps->queue);
        free(ps);
        if (bad_redis_url)
            PyErr_Format(PyExc_ValueError, "invalid redis_url: %s", qcfg->redis_url);
        else
            PyErr_Format(PyExc_RuntimeError, "%s (os error %d)", strerror(-rc), -rc);
        free(log_capture_take());
        return -1;
    }
    uv_timer_init(&ps->loop, &ps->signal_timer);
    uv_timer_start(&ps->signal_timer, signal_tick, 100, 100);

    ps->saved_thread = PyEval_SaveThread();
    uv_run(&ps->loop, UV_RUN_DEFAULT);
    uv_walk(&ps->loop, close_walk, NULL);
    uv_run(&ps->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ps->loop);
    PyEval_RestoreThread(ps->saved_thread);
    queue_door_free(ps->queue);
    free(ps);
    return 0;
}

PyObject *coglet_serve(PyObject *module, PyObject *args, PyObject *kwargs) {
    (void)module;
    static char *kwlist[] = {"predictor_ref",     "host",          "port",          "await_explicit_shutdown",
                             "is_train",          "output_temp_dir_base", "upload_url", "redis_url",
                             "input_queue",       "consumer_id",   "report_setup_run_url", "predict_timeout",
                             "max_failure_count", NULL};
    const char *ref = NULL, *host = "0.0.0.0", *upload_url = NULL;
    int port = 5000, await_shutdown = 0, is_train = 0, max_failures = -1;
    PyObject *output_temp_dir_base = NULL, *port_obj = NULL;
    queue_config qcfg = {0};
    double predict_timeout = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|zsOppOzzzzzdi:serve", kwlist, &ref, &host, &port_obj,
                                     &await_shutdown, &is_train, &output_temp_dir_base, &upload_url, &qcfg.redis_url,
                                     &qcfg.stream, &qcfg.consumer, &qcfg.report_setup_url, &predict_timeout,
                                     &max_failures))
        return NULL;
    if (port_obj && port_obj != Py_None && !PyArg_Parse(port_obj, "i", &port))
        return NULL; /* not an int, or past int's range: not cut down to one */
    if (qcfg.redis_url && (!qcfg.stream || !*qcfg.stream || !qcfg.consumer || !*qcfg.consumer)) {
        PyErr_SetString(PyExc_ValueError, "redis_url needs input_queue and consumer_id");
        return NULL;
    }
    if (!qcfg.redis_url && (qcfg.stream || qcfg.consumer || qcfg.report_setup_url)) {
        PyErr_SetString(PyExc_ValueError, "input_queue, consumer_id and report_setup_run_url need redis_url");
        return NULL;
    }
    qcfg.predict_timeout_s = predict_timeout > 0 ? predict_timeout : 0;
    qcfg.max_failures = max_failures < 0 ? -1 : max_failures;
    /* pull mode opens the HTTP port only when one is given */
    int http = !qcfg.redis_url || (port_obj && port_obj != Py_None);
    const char *output_dir_base = NULL; /* given: prediction directories go under it */
    if (output_temp_dir_base && output_temp_dir_base != Py_None) {
        if (!PyUnicode_Check(output_temp_dir_base)) {
            PyErr_SetString(PyExc_TypeError, "output_temp_dir_base must be a str");
            return NULL;
        }
        output_dir_base = PyUnicode_AsUTF8AndSize(output_temp_dir_base, NULL);
        if (!output_dir_base)
            return NULL;
    }
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) {
        PyErr_Format(PyExc_RuntimeError, "invalid socket address syntax: %s:%d", host, port);
        return NULL;
    }
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_RuntimeError, "invalid port: %d", port);
        return NULL;
    }

    log_init();
    log_capture_begin();
    char *cog_version = detect_cog_version();
    char *py_version = detect_python_version();
    char *python = string_attr_call("sys", "executable");
    if (!python || !*python) {
        free(python);
        python = strdup("python"); /* no sys.executable: fall back to PATH, as the anchor does */
    }
    log_info(TARGET, "coglet %s (%s, built %s)", coglet_build.version, coglet_build.git_sha, coglet_build.build_time);
    log_info(TARGET, "python sdk %s", cog_version ? cog_version : "unknown");
    log_info(TARGET, "python %s", py_version ? py_version : "unknown");

    int concurrency;
    double setup_timeout;
    read_worker_env(&concurrency, &setup_timeout);
    if (ref) {
        log_event(LOG_INFO, TARGET, json_pack("{s:s, s:b}", "predictor_ref", ref, "is_train", is_train),
                  "Using subprocess isolation");
        log_event(LOG_INFO, TARGET, json_pack("{s:i}", "max_concurrency", concurrency),
                  "Configuring subprocess worker via orchestrator");
    }

    worker_forker forker;
    worker_forker_choose(&forker); /* before any thread starts */
    saved_handlers saved = {NULL, NULL};
    int rc = install_handlers(&saved, await_shutdown);
    if (rc == 0) {
        core_config cfg = {
            .forker = forker,
            .predictor_ref = ref,
            .is_train = is_train,
            .upload_url = upload_url,
            .python = python,
            .max_concurrency = concurrency,
            .setup_timeout = setup_timeout,
            .python_sdk_version = cog_version,
            .python_version = py_version,
            .shutdown_grace = env_seconds("COG_SHUTDOWN_GRACE", 30.0),
            .output_dir_base = output_dir_base,
        };
        rc = run_loop(&cfg, host, http, port, &qcfg);
    }
    restore_handlers(&saved);
    free(cog_version);
    free(py_version);
    free(python);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}
