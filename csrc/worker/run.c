/* worker/run.c: one prediction from its predict frame to its terminal message: the slot marked
 * busy, context and scope, the input (inline or spilled), the run path (worker/run_sync.c,
 * worker/run_async.c), the result delivered, the contexts left, then done/failed/cancelled. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/json_in.h"
#include "py/convert.h"
#include "py/sdk.h"
#include "worker/worker.h"

#define ERROR_TEXT_MAX ((size_t)1 << 20)

/* ---- errors ---- */

/* "".join(traceback.format_exception(type, value, tb)), or NULL. */
static char *format_traceback(PyObject *type, PyObject *value, PyObject *tb) {
    PyObject *mod = PyImport_ImportModule("traceback");
    PyObject *lines = mod ? PyObject_CallMethod(mod, "format_exception", "OOO", type, value ? value : Py_None,
                                                tb ? tb : Py_None)
                          : NULL;
    PyObject *empty = lines ? PyUnicode_FromString("") : NULL;
    PyObject *text = empty ? PyUnicode_Join(empty, lines) : NULL;
    const char *t = text ? PyUnicode_AsUTF8AndSize(text, NULL) : NULL;
    char *out = t ? strdup(t) : NULL;
    Py_XDECREF(text);
    Py_XDECREF(empty);
    Py_XDECREF(lines);
    Py_XDECREF(mod);
    PyErr_Clear();
    return out;
}

char *worker_format_pyerr(char **message, char **traceback) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return strdup("unknown error");
    PyErr_NormalizeException(&type, &value, &tb);
    if (traceback) {
        free(*traceback);
        *traceback = format_traceback(type, value, tb);
    }
    buf out;
    buf_init(&out, ERROR_TEXT_MAX);
    PyObject *qn = PyObject_GetAttrString(type, "__qualname__");
    const char *qs = qn && PyUnicode_Check(qn) ? PyUnicode_AsUTF8AndSize(qn, NULL) : NULL;
    PyErr_Clear();
    PyObject *str = value ? PyObject_Str(value) : NULL;
    const char *ss = str ? PyUnicode_AsUTF8AndSize(str, NULL) : NULL;
    PyErr_Clear();
    buf_printf(&out, "%s: %s", qs ? qs : "Exception", ss ? ss : "");
    if (message) {
        free(*message);
        *message = strdup(ss ? ss : "");
    }
    Py_XDECREF(qn);
    Py_XDECREF(str);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return buf_steal(&out);
}

void run_fail(run_ctx *rc, const char *message) {
    free(rc->error);
    rc->error = strdup(message);
    rc->failed = 1;
}

void run_fail_pyerr(run_ctx *rc, const char *prefix) {
    char *e = worker_format_pyerr(&rc->exc_message, &rc->exc_traceback);
    buf out;
    buf_init(&out, ERROR_TEXT_MAX);
    buf_printf(&out, "%s%s", prefix, e ? e : "");
    free(e);
    free(rc->error);
    rc->error = buf_steal(&out);
    rc->failed = 1;
}

/* ---- the input ---- */

static int read_whole(int fd, char *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO; /* shorter than fstat said */
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* An input over the parent's spill size comes as a file: read it, delete it before parsing
 * (it is ours now, whatever the parse says), parse it with the parser frames use. */
static json_t *read_spilled_input(const char *path, char *err, size_t errlen) {
    PyThreadState *ts = PyEval_SaveThread();
    json_t *v = NULL;
    char *data = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        goto done;
    }
    data = malloc((size_t)st.st_size + 1);
    int rc = data ? read_whole(fd, data, (size_t)st.st_size) : -ENOMEM;
    if (rc < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(-rc));
        goto done;
    }
    unlink(path);
    json_in_error jerr;
    v = json_in_parse(data, (size_t)st.st_size, &jerr);
    if (!v)
        snprintf(err, errlen, "%s", jerr.text);
done:
    if (fd >= 0)
        close(fd);
    free(data);
    PyEval_RestoreThread(ts);
    return v;
}

/* The method's keyword arguments: `input`, or the file `input_file` names. NULL with rc
 * failed. */
static PyObject *read_input(run_ctx *rc, json_t *job) {
    json_t *input = json_object_get(job, "input"), *spilled = NULL;
    const char *input_file = json_string_value(json_object_get(job, "input_file"));
    if (!input && input_file) {
        char err[300], msg[340];
        spilled = read_spilled_input(input_file, err, sizeof err);
        if (!spilled) {
            snprintf(msg, sizeof msg, "Failed to rehydrate input: %s", err);
            run_fail(rc, msg);
            return NULL;
        }
        input = spilled;
    } else if (!input) {
        run_fail(rc, "Failed to rehydrate input: predict frame has neither input nor input_file");
        return NULL;
    }
    PyObject *kwargs = pyjson_to_py(input);
    json_decref(spilled);
    if (!kwargs) {
        run_fail_pyerr(rc, "Input validation error: ");
        return NULL;
    }
    if (!PyDict_Check(kwargs)) {
        Py_DECREF(kwargs);
        run_fail(rc, "Input validation error: Input must be a JSON object");
        return NULL;
    }
    return kwargs;
}

/* ---- entering and leaving ---- */

/* The request's context (a dict; anything else or nothing is {}), with its scope. */
static int enter_scope(run_ctx *rc, json_t *job, run_entered *in) {
    json_t *context = json_object_get(job, "context");
    in->context = json_is_object(context) ? pyjson_to_py(context) : NULL;
    if (!in->context) {
        PyErr_Clear();
        in->context = PyDict_New();
    }
    rc->scope = in->context ? sdk_scope_new(rc->w->sdk, in->context, rc->s) : NULL;
    if (!rc->scope) {
        run_fail_pyerr(rc, "Prediction failed: ");
        return -1;
    }
    return 0;
}

int run_prepare(run_ctx *rc, run_entered *in) {
    worker *w = rc->w;
    if (!w->has_coercions)
        return 0;
    in->temps = PyObject_CallMethod(w->runtime, "prepare_input", "OO", w->pred, in->kwargs);
    if (in->temps)
        return 0;
    if (slot_is_cancelled(w, rc->s)) {
        PyErr_Clear();
        rc->cancelled = 1;
    } else {
        run_fail_pyerr(rc, "Input validation error: ");
    }
    return -1;
}

int run_enter(run_ctx *rc, json_t *job, run_entered *in) {
    worker *w = rc->w;
    unsigned long long seq = (unsigned long long)json_integer_value(json_object_get(job, "seq"));
    if (slot_begin(w, rc->s, rc->id, seq)) {
        rc->cancelled = 1;
        return -1;
    }
    if (w->training_unsupported) {
        run_fail(rc, "Training not supported by this predictor");
        return -1;
    }
    if (enter_scope(rc, job, in) < 0)
        return -1;
    in->kwargs = read_input(rc, job);
    return in->kwargs ? 0 : -1;
}

static void leave(run_ctx *rc, run_entered *in) {
    worker *w = rc->w;
    if (!rc->cancelled && rc->failed && slot_is_cancelled(w, rc->s))
        rc->cancelled = 1; /* whatever failed, it failed because we cancelled it */
    PyErr_Clear();
    if (rc->scope) {
        sdk_scope_deactivate(w->sdk, rc->scope);
        Py_CLEAR(rc->scope);
    }
    hooks_flush_writers(w, rc->s);
    if (in->temps) {
        PyObject *r = PyObject_CallMethod(w->runtime, "cleanup", "O", in->temps);
        Py_XDECREF(r);
        Py_CLEAR(in->temps);
        PyErr_Clear();
    }
    Py_CLEAR(rc->result);
    Py_CLEAR(in->kwargs);
    Py_CLEAR(in->context);
}

/* ---- the result ---- */

void run_stream_generator(run_ctx *rc, PyObject *generator) {
    rc->stream = 1;
    outputs_stream(rc, generator, "Prediction failed: Generator iteration error: ");
}

/* A list or tuple goes out item by item (a stream); any other value but None is the final
 * value. */
void run_deliver(run_ctx *rc) {
    PyObject *result = rc->result;
    if (!result || result == Py_None)
        return;
    if (!PyList_Check(result) && !PyTuple_Check(result)) {
        outputs_final(rc, result);
        return;
    }
    rc->stream = 1;
    PyObject *it = PyObject_GetIter(result);
    if (!it) {
        run_fail_pyerr(rc, "Prediction failed: Failed to process output item: ");
        return;
    }
    /* every item is there already: they go out in output_items frames with the terminal
     * message, in one write (a list of 384 floats was 384 frames, writes and wake-ups) */
    outputs_items(rc, it);
    Py_DECREF(it);
}

/* The slot is already idle: the parent may reuse it the moment this arrives. A write that
 * fails poisons the slot. */
static void send_terminal(run_ctx *rc) {
    json_t *msg;
    if (rc->cancelled)
        msg = json_pack("{s:s, s:s}", "type", "cancelled", "id", rc->id);
    else if (rc->failed)
        msg = json_pack("{s:s, s:s, s:s, s:s*, s:s*}", "type", "failed", "id", rc->id, "error",
                        rc->error ? rc->error : "", "message", rc->exc_message, "traceback", rc->exc_traceback);
    else if (rc->stream)
        msg = json_pack("{s:s, s:s, s:b}", "type", "done", "id", rc->id, "is_stream", 1);
    else
        msg = json_pack("{s:s, s:s}", "type", "done", "id", rc->id);
    int sent;
    if (rc->final_text && !rc->cancelled && !rc->failed) {
        /* one frame: the final value rides in `done` (docs/architecture.md, where we differ) */
        size_t flen;
        char *frame = msg ? frame_encode_with_raw(msg, "output", rc->final_text, rc->final_len, &flen) : NULL;
        json_decref(msg);
        sent = frame ? worker_send_slot_raw(rc->s, frame, flen, 1) : -EMSGSIZE;
    } else {
        sent = worker_send_slot(rc->s, msg, 1);
    }
    if (sent != 0)
        worker_poison_slot(rc->w, rc->s, "Socket write error: cannot write to slot socket", 1);
}

void run_init(run_ctx *rc, worker *w, wslot *s, json_t *job) {
    const char *id = json_string_value(json_object_get(job, "id"));
    const char *output_dir = json_string_value(json_object_get(job, "output_dir"));
    memset(rc, 0, sizeof *rc);
    rc->w = w;
    rc->s = s;
    rc->id = id ? id : "";
    rc->output_dir = output_dir ? output_dir : "/tmp/coglet/outputs";
}

void run_finish(run_ctx *rc, run_entered *in) {
    leave(rc, in);
    slot_end(rc->w, rc->s);
    if (!rc->w->path->is_async) {
        /* a cancel that raced the end must not fire in the next prediction */
        PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL);
        PyErr_Clear();
    }
    send_terminal(rc);
    free(rc->final_text);
    free(rc->error);
    free(rc->exc_message);
    free(rc->exc_traceback);
    rc->final_text = rc->error = rc->exc_message = rc->exc_traceback = NULL;
}

void run_prediction(worker *w, wslot *s, json_t *job) {
    run_ctx rc;
    run_entered in = {0};
    run_init(&rc, w, s, job);
    if (run_enter(&rc, job, &in) == 0 && run_prepare(&rc, &in) == 0) {
        w->path->call(&rc, in.kwargs);
        if (!rc.cancelled && !rc.failed)
            run_deliver(&rc);
    }
    run_finish(&rc, &in);
}
