/* worker/setup.c: the worker's Python side before predictions: SIGINT ignored, the log
 * writers installed, the predictor loaded (coglet/_runtime.py) and set up, then `ready`
 * with the schema, and the collector tuned for the predictions to come. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "py/sdk.h"
#include "worker/worker.h"

static PyObject *import_attr(const char *module, const char *name) {
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

/* Ctrl-C reaches the whole process group; the parent decides what it means. */
static void ignore_sigint(void) {
    PyObject *sig = PyImport_ImportModule("signal");
    PyObject *ign = sig ? PyObject_GetAttrString(sig, "SIG_IGN") : NULL;
    if (ign) {
        PyObject *r = PyObject_CallMethod(sig, "signal", "iO", SIGINT, ign);
        Py_XDECREF(r);
    }
    Py_XDECREF(ign);
    Py_XDECREF(sig);
    PyErr_Clear();
}

/* sys.stdout and sys.stderr become _SlotLogWriters, which route what user code prints. */
static int install_writers(worker *w) {
    static const char *const names[] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *orig = PySys_GetObject(names[i]); /* borrowed */
        if (!orig || sdk_is_slot_writer(w->sdk, orig))
            continue;
        PyObject *wr = sdk_slot_writer_new(w->sdk, orig, names[i]);
        if (!wr || PySys_SetObject(names[i], wr) < 0) {
            Py_XDECREF(wr);
            return -1;
        }
        Py_DECREF(wr);
    }
    return 0;
}

int setup_python(worker *w) {
    ignore_sigint();
    if (install_writers(w) < 0)
        return -1;
    w->generator_type = import_attr("types", "GeneratorType");
    w->pathlike_type = import_attr("os", "PathLike");
    w->iobase_type = import_attr("io", "IOBase");
    w->no_args = PyTuple_New(0);
    PyObject *cv_cls = import_attr("contextvars", "ContextVar");
    if (!w->generator_type || !w->pathlike_type || !w->iobase_type || !w->no_args || !cv_cls) {
        Py_XDECREF(cv_cls);
        return -1;
    }
    w->pred_id_var = PyObject_CallFunction(cv_cls, "s", "_coglet_prediction_id");
    Py_DECREF(cv_cls);
    return w->pred_id_var ? 0 : -1;
}

static void send_setup_failure(worker *w, const char *text) {
    worker_send_control(w, json_pack("{s:s, s:s, s:s}", "type", "failed", "slot", w->slots[0].id, "error", text), 1);
}

/* "Setup failed: {what}: {the pending exception}" to the parent. Always -1. */
static int setup_failed(worker *w, const char *what) {
    char *e = worker_format_pyerr(NULL, NULL);
    buf out;
    buf_init(&out, (size_t)1 << 20);
    buf_printf(&out, "Setup failed: %s: %s", what, e ? e : "");
    free(e);
    send_setup_failure(w, out.data ? out.data : "Setup failed");
    buf_free(&out);
    return -1;
}

/* A replaced sys.stdout stays captured: best effort, predictions run without it. */
static void protect_std_streams(worker *w) {
    PyObject *slot_writer = PyObject_GetAttrString(w->sdk, "_SlotLogWriter");
    PyObject *tee_writer = PyObject_GetAttrString(w->sdk, "_TeeWriter");
    PyObject *r = slot_writer && tee_writer
                      ? PyObject_CallMethod(w->runtime, "protect_std_streams", "OO", slot_writer, tee_writer)
                      : NULL;
    Py_XDECREF(r);
    Py_XDECREF(slot_writer);
    Py_XDECREF(tee_writer);
    PyErr_Clear();
}

static int bool_attr(PyObject *o, const char *name) {
    PyObject *v = PyObject_GetAttrString(o, name);
    int r = v ? PyObject_IsTrue(v) : 0;
    Py_XDECREF(v);
    PyErr_Clear();
    return r == 1;
}

/* The run path and the method's name from Predictor.kind and .method_name. */
static int read_kind(worker *w) {
    PyObject *kind = PyObject_GetAttrString(w->pred, "kind");
    PyObject *name = kind ? PyObject_GetAttrString(w->pred, "method_name") : NULL;
    const char *k = name && PyUnicode_Check(kind) ? PyUnicode_AsUTF8AndSize(kind, NULL) : NULL;
    const char *n = k && PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, NULL) : NULL;
    if (n) {
        w->path = !strcmp(k, "async")             ? &run_path_async
                  : !strcmp(k, "async_generator") ? &run_path_async_generator
                                                  : &run_path_sync; /* sync, or a sync generator */
        snprintf(w->method_name, sizeof w->method_name, "%s", n);
    }
    Py_XDECREF(kind);
    Py_XDECREF(name);
    return n ? 0 : -1;
}

int setup_predictor(worker *w, const char *ref) {
    w->runtime = PyImport_ImportModule("coglet._runtime");
    if (!w->runtime)
        return setup_failed(w, "failed to load predictor");
    protect_std_streams(w);
    PyObject *cls = PyObject_GetAttrString(w->runtime, "Predictor");
    w->encode_other = cls ? PyObject_GetAttrString(w->runtime, "encode_other") : NULL;
    if (!w->encode_other) {
        Py_XDECREF(cls);
        return setup_failed(w, "failed to load predictor");
    }
    /* debug lines: the start-up phases, from these timestamps (docs/benchmarks.md) */
    worker_log(w, "debug", "Loading predictor", 1);
    w->pred = PyObject_CallFunction(cls, "sO", ref, w->is_train ? Py_True : Py_False);
    Py_DECREF(cls);
    if (!w->pred)
        return setup_failed(w, "failed to load predictor");
    worker_log(w, "debug", "Predictor loaded", 1);
    w->method = PyObject_GetAttrString(w->pred, "method");
    if (!w->method || read_kind(w) < 0)
        return setup_failed(w, "failed to load predictor");
    w->has_coercions = bool_attr(w->pred, "coercions");
    w->training_unsupported = bool_attr(w->pred, "training_unsupported");
    if (w->num_slots > 1 && !w->path->is_async) {
        /* the message alone, not "RuntimeError: ...": what the original reports */
        send_setup_failure(w, "Setup failed: setup failed: COG_MAX_CONCURRENCY > 1 requires an async run() or "
                              "predict() method");
        return -1;
    }
    PyObject *r = PyObject_CallMethod(w->pred, "setup", NULL);
    if (!r)
        return setup_failed(w, "setup failed");
    Py_DECREF(r);
    worker_log(w, "debug", "Predictor setup done", 1);
    if (w->path->is_async && async_init(w) < 0)
        return setup_failed(w, "setup failed");
    return 0;
}

/* What import and setup made lives as long as the worker: frozen out of the collector's
 * view, a full collection no longer walks it during a prediction. Predictions allocate
 * mostly short-lived objects that reference counting frees; a young-generation pass every
 * 700 allocations mostly finds nothing and shows up as latency outliers (p99 191 -> 119 us
 * with the collector off, measured). Collect less often, not never. */
static void tune_collector(void) {
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *frozen = gc ? PyObject_CallMethod(gc, "freeze", NULL) : NULL;
    Py_XDECREF(frozen);
    PyObject *thr = gc ? PyObject_CallMethod(gc, "get_threshold", NULL) : NULL;
    int t1 = 10, t2 = 10;
    if (thr && PyTuple_Check(thr) && PyTuple_Size(thr) == 3) {
        t1 = (int)PyLong_AsLong(PyTuple_GetItem(thr, 1));
        t2 = (int)PyLong_AsLong(PyTuple_GetItem(thr, 2));
    }
    Py_XDECREF(thr);
    PyErr_Clear();
    PyObject *set = gc ? PyObject_CallMethod(gc, "set_threshold", "iii", 50000, t1, t2) : NULL;
    Py_XDECREF(set);
    Py_XDECREF(gc);
    PyErr_Clear();
}

/* The bundled or generated OpenAPI schema, or NULL. */
static json_t *read_schema(worker *w) {
    PyObject *schema_obj = PyObject_CallMethod(w->runtime, "read_schema", "O", w->pred);
    json_t *schema = schema_obj && schema_obj != Py_None ? outputs_to_json(w, schema_obj) : NULL;
    Py_XDECREF(schema_obj);
    PyErr_Clear();
    return schema;
}

void setup_send_ready(worker *w) {
    json_t *schema = read_schema(w);
    json_t *slots = json_array();
    for (int i = 0; slots && i < w->num_slots; i++)
        json_array_append_new(slots, json_string(w->slots[i].id));
    PyObject *hc = PyObject_GetAttrString(w->pred, "healthcheck");
    int has_hc = hc && hc != Py_None;
    Py_XDECREF(hc);
    PyErr_Clear();
    tune_collector();
    json_t *ready = json_pack("{s:s, s:o, s:b}", "type", "ready", "slots", slots, "has_healthcheck", has_hc);
    if (ready && schema)
        json_object_set(ready, "schema", schema);
    json_decref(schema);
    int rc = worker_send_frame(w->control_fd, &w->control_lock, ready, 1);
    if (rc == -EMSGSIZE && json_object_get(ready, "schema")) {
        /* a schema over the frame cap: ready without it, and say why */
        json_object_del(ready, "schema");
        worker_log(w, "warn", "OpenAPI schema over the 8 MiB frame limit; serving without a schema", 1);
        worker_send_frame(w->control_fd, &w->control_lock, ready, 1);
    }
    json_decref(ready);
    for (int i = 0; i < w->num_slots; i++)
        worker_send_slot(&w->slots[i], json_pack("{s:s, s:i}", "type", "protocol_version", "version", 1), 1);
}
