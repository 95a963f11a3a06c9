/* py/worker.c: coglet.server._run_worker(), the worker process. Speaks the frame protocol
 * in C: the main thread polls the control channel and the slot sockets with the GIL
 * released; one C thread per slot runs predictions through the C API. Python-level help
 * (loading, setup, file inputs, non-JSON outputs) comes from coglet/_runtime.py. */
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/json_in.h"
#include "common/json_out.h"
#include "ipc/frame.h"
#include "py/module.h"
#include "py/sdk.h"

#define LOG_LINE_MAX ((size_t)4 << 20)
#define LOG_TRUNCATED "[**** LOG LINE TRUNCATED AT 4 MiB ****]"

typedef struct wslot {
    int index;
    int fd;
    char id[40];
    pthread_mutex_t write_lock;
    frame_decoder dec;
    /* guarded by the worker's state lock */
    char *current_id;   /* the prediction running, or NULL */
    unsigned long long current_seq; /* its dispatch number */
    unsigned long long seen_seq;    /* highest predict frame received on this slot */
    unsigned long long cancel_seq;  /* a cancel that overtook its predict frame */
    unsigned long long finished_seq; /* the last dispatch that ended */
    int running;
    int cancelled;
    int poisoned;
    unsigned long thread_ident;
    PyObject *future;   /* async prediction's concurrent future (GIL) */
    pthread_t thread;
    int thread_started;
} wslot;

typedef struct worker {
    int control_fd;
    pthread_mutex_t control_lock;
    pthread_mutex_t lock; /* slot states, early cancels */
    int quit;
    int num_slots;
    wslot *slots;
    wslot *sync_slot; /* the slot of the running sync prediction (log routing) */
    int is_train;
    /* Python objects (GIL) */
    PyObject *runtime;     /* coglet._runtime */
    PyObject *pred;        /* _runtime.Predictor */
    PyObject *method;
    PyObject *pred_id_var; /* ContextVar _coglet_prediction_id */
    PyObject *generator_type;
    PyObject *pathlike_type, *iobase_type; /* file outputs */
    PyObject *cancel_exc;
    int kind_async, kind_asyncgen;
    int has_coercions;
    int training_unsupported;
    const char *method_name;
    char method_name_buf[32];
} worker;

static worker *the_worker; /* one per process; C threads and the log writers reach it here */
/* Set while a slot thread flushes the writers at the end of its prediction: those bytes
 * belong to that prediction whatever the context says. */
static _Thread_local wslot *route_override;

/* ---- raw fd I/O (call without the GIL) ---- */

static int read_full(int fd, void *p, size_t n) {
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Sends one frame. Releases the GIL around the lock and the write when it holds it. */
/* Sends an encoded frame (taken). Releases the GIL around the lock and the write when it
 * holds it: a slow reader must not stall other Python threads. */
static int send_raw(int fd, pthread_mutex_t *lock, char *data, size_t len, int have_gil) {
    PyThreadState *ts = have_gil ? PyEval_SaveThread() : NULL;
    pthread_mutex_lock(lock);
    int rc = write_all(fd, data, len);
    pthread_mutex_unlock(lock);
    if (ts)
        PyEval_RestoreThread(ts);
    free(data);
    return rc;
}

/* Sends one frame; -2 when it cannot be encoded (over the cap). */
static int send_frame(int fd, pthread_mutex_t *lock, const json_t *msg, int have_gil) {
    size_t len;
    char *data = frame_encode_alloc(msg, &len);
    if (!data)
        return -2;
    return send_raw(fd, lock, data, len, have_gil);
}

static int send_control(worker *w, json_t *msg, int have_gil) {
    int rc = send_frame(w->control_fd, &w->control_lock, msg, have_gil);
    json_decref(msg);
    return rc;
}

static int send_slot(wslot *s, json_t *msg, int have_gil) {
    int rc = send_frame(s->fd, &s->write_lock, msg, have_gil);
    json_decref(msg);
    return rc;
}

static void worker_log(worker *w, const char *level, const char *message, int have_gil) {
    send_control(w, json_pack("{s:s, s:s, s:s, s:s}", "type", "worker_log", "target", "coglet::worker", "level", level,
                              "message", message),
                 have_gil);
}

/* ---- Python <-> JSON ---- */

static PyObject *py_from_json(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_NULL: Py_RETURN_NONE;
    case JSON_TRUE: Py_RETURN_TRUE;
    case JSON_FALSE: Py_RETURN_FALSE;
    case JSON_INTEGER: return PyLong_FromLongLong(json_integer_value(j));
    case JSON_REAL: return PyFloat_FromDouble(json_real_value(j));
    case JSON_STRING: return PyUnicode_FromStringAndSize(json_string_value(j), (Py_ssize_t)json_string_length(j));
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        PyObject *list = PyList_New((Py_ssize_t)n);
        if (!list)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            PyObject *v = py_from_json(json_array_get(j, i));
            if (!v) {
                Py_DECREF(list);
                return NULL;
            }
            PyList_SetItem(list, (Py_ssize_t)i, v);
        }
        return list;
    }
    case JSON_OBJECT: {
        PyObject *d = PyDict_New();
        if (!d)
            return NULL;
        const char *k;
        size_t klen;
        json_t *v;
        void *tmp;
        json_object_keylen_foreach_safe((json_t *)j, tmp, k, klen, v) {
            PyObject *key = PyUnicode_FromStringAndSize(k, (Py_ssize_t)klen);
            PyObject *val = key ? py_from_json(v) : NULL;
            if (!val || PyDict_SetItem(d, key, val) < 0) {
                Py_XDECREF(key);
                Py_XDECREF(val);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(key);
            Py_DECREF(val);
        }
        return d;
    }
    }
    Py_RETURN_NONE;
}

static json_t *json_from_py(worker *w, PyObject *o, int depth);

static char *dict_key(PyObject *k) {
    Py_ssize_t n;
    if (PyUnicode_Check(k)) {
        const char *s = PyUnicode_AsUTF8AndSize(k, &n);
        return s ? strndup(s, (size_t)n) : NULL;
    }
    if (k == Py_True)
        return strdup("true");
    if (k == Py_False)
        return strdup("false");
    if (k == Py_None)
        return strdup("null");
    if (PyLong_Check(k) || PyFloat_Check(k)) {
        PyObject *r = PyObject_Repr(k);
        if (!r)
            return NULL;
        const char *s = PyUnicode_AsUTF8AndSize(r, &n);
        char *out = s ? strndup(s, (size_t)n) : NULL;
        Py_DECREF(r);
        return out;
    }
    PyErr_SetString(PyExc_TypeError, "keys must be str, int, float, bool or None");
    return NULL;
}

static json_t *json_from_py(worker *w, PyObject *o, int depth) {
    if (depth > 200) {
        PyErr_SetString(PyExc_ValueError, "output nested too deeply");
        return NULL;
    }
    if (o == Py_None)
        return json_null();
    if (o == Py_True)
        return json_true();
    if (o == Py_False)
        return json_false();
    if (PyLong_Check(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (!overflow)
            return json_integer(v);
        double d = PyLong_AsDouble(o);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
        return json_real(d);
    }
    if (PyFloat_Check(o)) {
        double d = PyFloat_AsDouble(o);
        if (d != d || d == 1.0 / 0.0 || d == -1.0 / 0.0) {
            PyErr_SetString(PyExc_ValueError, "Out of range float values are not JSON compliant");
            return NULL;
        }
        return json_real(d);
    }
    if (PyUnicode_Check(o)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (!s)
            return NULL;
        json_t *j = json_stringn_nocheck(s, (size_t)n);
        if (!j)
            PyErr_NoMemory();
        return j;
    }
    if (PyList_Check(o) || PyTuple_Check(o)) {
        PyObject *seq = PySequence_Fast(o, "not a sequence");
        if (!seq)
            return NULL;
        Py_ssize_t n = PySequence_Size(seq);
        json_t *arr = json_array();
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PySequence_GetItem(seq, i);
            json_t *j = item ? json_from_py(w, item, depth + 1) : NULL;
            Py_XDECREF(item);
            if (!j) {
                json_decref(arr);
                Py_DECREF(seq);
                return NULL;
            }
            json_array_append_new(arr, j);
        }
        Py_DECREF(seq);
        return arr;
    }
    if (PyDict_Check(o)) {
        json_t *obj = json_object();
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(o, &pos, &k, &v)) {
            char *key = dict_key(k);
            if (!key) {
                json_decref(obj);
                return NULL;
            }
            json_t *j = json_from_py(w, v, depth + 1);
            if (!j) {
                free(key);
                json_decref(obj);
                return NULL;
            }
            json_object_set_new_nocheck(obj, key, j);
            free(key);
        }
        return obj;
    }
    /* not JSON-native: one step of the Python-side encoding, then recurse */
    PyObject *step = PyObject_CallMethod(w->runtime, "encode_other", "O", o);
    if (!step)
        return NULL;
    if (Py_TYPE(step) == Py_TYPE(o)) {
        Py_DECREF(step);
        PyErr_SetString(PyExc_TypeError, "output is not JSON serializable");
        return NULL;
    }
    json_t *j = json_from_py(w, step, depth + 1);
    Py_DECREF(step);
    return j;
}

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

/* The last exception's str() and traceback, for the failed frame: the queue door's responses
 * carry them separately (docs/queue.md); NULL when none was formatted. Worker threads each
 * keep their own. */
static __thread char *last_exc_message, *last_exc_traceback;

static void forget_last_exception(void) {
    free(last_exc_message);
    free(last_exc_traceback);
    last_exc_message = last_exc_traceback = NULL;
}

/* "{type qualname}: {str(exc)}" of the pending exception, cleared. */
static char *format_pyerr(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return strdup("unknown error");
    PyErr_NormalizeException(&type, &value, &tb);
    forget_last_exception();
    last_exc_traceback = format_traceback(type, value, tb);
    buf out;
    buf_init(&out, 1 << 20);
    PyObject *qn = PyObject_GetAttrString(type, "__qualname__");
    const char *qs = qn ? PyUnicode_AsUTF8AndSize(qn, NULL) : NULL;
    buf_append_str(&out, qs ? qs : "Exception");
    PyErr_Clear();
    PyObject *str = value ? PyObject_Str(value) : NULL;
    const char *ss = str ? PyUnicode_AsUTF8AndSize(str, NULL) : NULL;
    PyErr_Clear();
    buf_printf(&out, ": %s", ss ? ss : "");
    last_exc_message = strdup(ss ? ss : "");
    Py_XDECREF(qn);
    Py_XDECREF(str);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return buf_steal(&out);
}

/* ---- log routing (called by _SlotLogWriter with the GIL held) ---- */

static wslot *slot_for_current_context(worker *w) {
    if (route_override)
        return route_override;
    if (w->sync_slot)
        return w->sync_slot;
    if (!w->pred_id_var)
        return NULL;
    PyObject *id = PyObject_CallMethod(w->pred_id_var, "get", "O", Py_None);
    if (!id) {
        PyErr_Clear();
        return NULL;
    }
    wslot *found = NULL;
    if (PyUnicode_Check(id)) {
        const char *s = PyUnicode_AsUTF8AndSize(id, NULL);
        pthread_mutex_lock(&w->lock);
        for (int i = 0; s && i < w->num_slots; i++)
            if (w->slots[i].current_id && !strcmp(w->slots[i].current_id, s))
                found = &w->slots[i];
        pthread_mutex_unlock(&w->lock);
    }
    PyErr_Clear();
    Py_DECREF(id);
    return found;
}

void worker_route_log(const char *source, const char *data, size_t len) {
    worker *w = the_worker;
    if (!w || !len)
        return;
    char *copy = NULL;
    if (len > LOG_LINE_MAX) {
        /* cut at a character boundary, then say so (SPEC 7.7) */
        size_t cut = LOG_LINE_MAX - sizeof LOG_TRUNCATED + 1;
        while (cut > 0 && ((unsigned char)data[cut] & 0xC0) == 0x80)
            cut--;
        copy = malloc(cut + sizeof LOG_TRUNCATED);
        if (!copy)
            return;
        memcpy(copy, data, cut);
        memcpy(copy + cut, LOG_TRUNCATED, sizeof LOG_TRUNCATED);
        data = copy;
        len = cut + sizeof LOG_TRUNCATED - 1;
    }
    wslot *s = slot_for_current_context(w);
    json_t *str = json_stringn_nocheck(data, len);
    if (s)
        send_slot(s, json_pack("{s:s, s:s, s:o}", "type", "log_line", "source", source, "data", str), 1);
    else
        send_control(w, json_pack("{s:s, s:s, s:o}", "type", "log", "source", source, "data", str), 1);
    free(copy);
}

int worker_send_metric(void *slot, const char *name, json_t *value, const char *mode, char *err, size_t errlen) {
    wslot *s = slot;
    if (!s) {
        json_decref(value);
        snprintf(err, errlen, "no active prediction");
        return -1;
    }
    json_t *msg = json_pack("{s:s, s:s, s:o, s:s}", "type", "metric", "name", name, "value", value ? value : json_null(),
                            "mode", mode);
    if (send_slot(s, msg, 1) != 0) {
        snprintf(err, errlen, "%s", strerror(errno ? errno : EPIPE));
        return -1;
    }
    return 0;
}

/* ---- running one prediction (slot thread, GIL held) ---- */

/* SPEC 7.6: read the spilled input, delete it before parsing, parse it (our parser, then
 * straight to Python objects: several times faster than json.loads on long strings). */
static json_t *read_spilled_input(const char *path, char *err, size_t errlen) {
    PyThreadState *ts = PyEval_SaveThread();
    json_t *v = NULL;
    char *data = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        goto done;
    }
    data = malloc((size_t)st.st_size + 1);
    if (!data || read_full(fd, data, (size_t)st.st_size) != 0) {
        snprintf(err, errlen, "cannot read %s", path);
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

typedef struct run_ctx {
    worker *w;
    wslot *s;
    const char *id;
    const char *output_dir;
    int files;     /* file outputs so far (their names) */
    int index;     /* next inline output index */
    int failed;
    char *error;
} run_ctx;

static void fail_with_pyerr(run_ctx *rc, const char *prefix) {
    char *e = format_pyerr();
    buf out;
    buf_init(&out, 1 << 20);
    buf_printf(&out, "%s%s", prefix, e);
    free(e);
    free(rc->error);
    rc->error = buf_steal(&out);
    rc->failed = 1;
}

static void random_uuid(char *out);

/* os.PathLike or io.IOBase; JSON-native values are answered without isinstance calls. */
static int is_file_like(worker *w, PyObject *o) {
    if (o == Py_None || PyUnicode_CheckExact(o) || PyLong_CheckExact(o) || PyFloat_CheckExact(o) ||
        PyDict_CheckExact(o) || PyList_CheckExact(o) || PyTuple_CheckExact(o) || PyBool_Check(o))
        return 0;
    int r = PyObject_IsInstance(o, w->pathlike_type);
    if (r != 0)
        return r;
    return PyObject_IsInstance(o, w->iobase_type);
}

static int mkdirs(const char *path) {
    char tmp[1400];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *c = tmp + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *c = '/';
    }
    return mkdir(tmp, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

/* SPEC 7.6: an output whose frame would pass the cap goes through a file the parent reads
 * (and deletes). Takes text. */
static int spill_output(run_ctx *rc, char *text, size_t len) {
    char uuid[40], path[1500];
    random_uuid(uuid);
    snprintf(path, sizeof path, "%s/spill_%s.json", rc->output_dir, uuid);
    PyThreadState *ts = PyEval_SaveThread();
    int ok = mkdirs(rc->output_dir) == 0;
    int fd = ok ? open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600) : -1;
    ok = fd >= 0 && write_all(fd, text, len) == 0;
    if (fd >= 0)
        close(fd);
    PyEval_RestoreThread(ts);
    free(text);
    if (!ok) {
        free(rc->error);
        rc->error = NULL;
        if (asprintf(&rc->error, "Prediction failed: Output spill error: cannot write %s", path) < 0)
            rc->error = NULL;
        rc->failed = 1;
        return -1;
    }
    send_slot(rc->s,
              json_pack("{s:s, s:s, s:{s:s}}", "type", "file_output", "filename", path, "kind", "type", "oversized"),
              1);
    return 0;
}

/* A value's JSON text, encoded once (whatever frame or file it ends up in). NULL with rc
 * failed. */
static char *encode_value(run_ctx *rc, PyObject *value, int final, size_t *len) {
    json_t *j = json_from_py(rc->w, value, 0);
    if (!j) {
        fail_with_pyerr(rc, final ? "Prediction failed: Failed to serialize output: "
                                  : "Prediction failed: Failed to serialize output item: ");
        return NULL;
    }
    char *text = json_out_string(j, 0);
    json_decref(j);
    if (!text) {
        rc->failed = 1;
        free(rc->error);
        rc->error = strdup("Prediction failed: Failed to serialize output: out of memory");
        return NULL;
    }
    *len = strlen(text);
    return text;
}

#define INLINE_MAX (FRAME_MAX_PAYLOAD - 4096)

/* Sends one output item: file-like → a file_output the parent turns into a data URL or
 * an upload; else encoded inline (or spilled). 0, or -1 with rc failed. */
static int send_output(run_ctx *rc, PyObject *item, int final) {
    worker *w = rc->w;
    const char *process_prefix =
        final ? "Prediction failed: Failed to process output: " : "Prediction failed: Failed to process output item: ";
    int file = is_file_like(w, item);
    if (file < 0) {
        fail_with_pyerr(rc, process_prefix);
        return -1;
    }
    if (file) {
        PyObject *t = PyObject_CallMethod(w->runtime, "file_output", "Osi", item, rc->output_dir, rc->files++);
        const char *path = NULL, *mime = NULL;
        int owned = 0;
        if (!t || !PyArg_ParseTuple(t, "sz|p", &path, &mime, &owned)) {
            Py_XDECREF(t);
            fail_with_pyerr(rc, process_prefix);
            return -1;
        }
        json_t *msg = json_pack("{s:s, s:s, s:{s:s}, s:b}", "type", "file_output", "filename", path, "kind", "type",
                                "file_type", "owned", owned);
        if (mime)
            json_object_set_new(msg, "mime_type", json_string(mime));
        Py_DECREF(t);
        send_slot(rc->s, msg, 1);
        return 0;
    }
    size_t len;
    char *text = encode_value(rc, item, final, &len);
    if (!text)
        return -1;
    if (len > INLINE_MAX)
        return spill_output(rc, text, len);
    json_t *msg = json_pack("{s:s, s:i}", "type", "output_chunk", "index", rc->index++);
    size_t flen;
    char *frame = frame_encode_with_raw(msg, "output", text, len, &flen);
    json_decref(msg);
    free(text);
    if (!frame) {
        rc->failed = 1;
        free(rc->error);
        rc->error = strdup("Prediction failed: Failed to send output: cannot encode the frame");
        return -1;
    }
    send_raw(rc->s->fd, &rc->s->write_lock, frame, flen, 1);
    return 0;
}

/* The final (non-stream) value's JSON text for `done`, or NULL after sending it another
 * way (file, spill) or failing. */
static char *encode_final(run_ctx *rc, PyObject *result, size_t *len) {
    int file = is_file_like(rc->w, result);
    if (file != 0) {
        if (file < 0)
            PyErr_Clear();
        send_output(rc, result, 1);
        return NULL;
    }
    char *text = encode_value(rc, result, 1, len);
    if (text && *len > INLINE_MAX) {
        spill_output(rc, text, *len);
        return NULL;
    }
    return text;
}

/* Iterates a generator, sending each item as it is produced. */
static int stream_iterable(run_ctx *rc, PyObject *it, const char *iter_prefix) {
    for (;;) {
        PyObject *item = PyIter_Next(it);
        if (!item) {
            if (PyErr_Occurred()) {
                fail_with_pyerr(rc, iter_prefix);
                return -1;
            }
            return 0;
        }
        int r = send_output(rc, item, 0);
        Py_DECREF(item);
        if (r)
            return -1;
    }
}

static int is_cancelled(worker *w, wslot *s) {
    pthread_mutex_lock(&w->lock);
    int c = s->cancelled;
    pthread_mutex_unlock(&w->lock);
    return c;
}

static void run_prediction(worker *w, wslot *s, json_t *job) {
    const char *id = json_string_value(json_object_get(job, "id"));
    if (!id)
        id = "";
    const char *output_dir = json_string_value(json_object_get(job, "output_dir"));
    run_ctx rc = {.w = w, .s = s, .id = id, .output_dir = output_dir ? output_dir : "/tmp/coglet/outputs"};
    int stream = 0, cancelled = 0;
    char *final_text = NULL; /* the final value's JSON, inline in `done` */
    size_t final_len = 0;
    PyObject *kwargs = NULL, *scope = NULL, *temps = NULL, *result = NULL, *context = NULL;
    PyObject *pid_token = NULL, *scope_token = NULL;

    unsigned long long seq = (unsigned long long)json_integer_value(json_object_get(job, "seq"));
    forget_last_exception();
    pthread_mutex_lock(&w->lock);
    free(s->current_id);
    s->current_id = strdup(id);
    s->current_seq = seq;
    s->cancelled = seq && s->cancel_seq == seq; /* cancelled before it started: applied, not lost */
    s->running = 1;
    s->thread_ident = PyThread_get_thread_ident();
    pthread_mutex_unlock(&w->lock);

    if (is_cancelled(w, s)) {
        cancelled = 1;
        goto finish;
    }
    if (w->training_unsupported) {
        rc.failed = 1;
        rc.error = strdup("Training not supported by this predictor");
        goto finish;
    }
    context = py_from_json(json_object_get(job, "context") ? json_object_get(job, "context") : json_object());
    if (!context || !PyDict_Check(context)) {
        Py_XDECREF(context);
        context = PyDict_New();
    }
    scope = sdk_scope_new(context, s);
    if (!scope) {
        fail_with_pyerr(&rc, "Prediction failed: ");
        goto finish;
    }
    if (w->kind_async || w->kind_asyncgen) {
        /* async predictions are told apart by context; a sync one by the process-wide
         * sync slot and scope, so it skips the ContextVar round trips */
        pid_token = PyObject_CallMethod(w->pred_id_var, "set", "s", id);
        scope_token = PyObject_CallMethod(sdk_scope_var(), "set", "O", scope);
        if (!pid_token || !scope_token) {
            fail_with_pyerr(&rc, "Prediction failed: ");
            goto finish;
        }
    }
    json_t *input = json_object_get(job, "input");
    const char *input_file = json_string_value(json_object_get(job, "input_file"));
    if (!input && input_file) {
        char err[300];
        json_t *spilled = read_spilled_input(input_file, err, sizeof err);
        if (!spilled) {
            rc.failed = 1;
            if (asprintf(&rc.error, "Failed to rehydrate input: %s", err) < 0)
                rc.error = NULL;
            goto finish;
        }
        kwargs = py_from_json(spilled);
        json_decref(spilled);
        if (!kwargs) {
            fail_with_pyerr(&rc, "Input validation error: ");
            goto finish;
        }
    } else if (!input) {
        rc.failed = 1;
        rc.error = strdup("Failed to rehydrate input: predict frame has neither input nor input_file");
        goto finish;
    } else {
        kwargs = py_from_json(input);
        if (!kwargs) {
            fail_with_pyerr(&rc, "Input validation error: ");
            goto finish;
        }
    }
    if (!PyDict_Check(kwargs)) {
        rc.failed = 1;
        rc.error = strdup("Input validation error: Input must be a JSON object");
        goto finish;
    }
    if (w->has_coercions) {
        temps = PyObject_CallMethod(w->runtime, "prepare_input", "OO", w->pred, kwargs);
        if (!temps) {
            if (is_cancelled(w, s)) {
                PyErr_Clear();
                cancelled = 1;
            } else {
                fail_with_pyerr(&rc, "Input validation error: ");
            }
            goto finish;
        }
    }

    PyObject *args = PyTuple_New(0);
    if (!w->kind_async && !w->kind_asyncgen) {
        sdk_set_sync_scope(scope);
        w->sync_slot = s;
        result = PyObject_Call(w->method, args, kwargs);
        if (result && PyObject_IsInstance(result, w->generator_type) == 1) {
            stream = 1;
            if (stream_iterable(&rc, result, "Prediction failed: Generator iteration error: ") && is_cancelled(w, s)) {
                cancelled = 1;
            }
        } else if (!result) {
            if (is_cancelled(w, s)) {
                PyErr_Clear();
                cancelled = 1;
            } else {
                fail_with_pyerr(&rc, w->is_train ? "Prediction failed: Training failed: " : "Prediction failed: ");
            }
        }
        w->sync_slot = NULL;
        sdk_set_sync_scope(NULL);
    } else {
        PyObject *coro = PyObject_Call(w->method, args, kwargs);
        if (!coro) {
            char prefix[96];
            snprintf(prefix, sizeof prefix, "Prediction failed: Failed to call %s: ", w->method_name);
            fail_with_pyerr(&rc, prefix);
        } else {
            PyObject *queue = NULL, *fut = NULL;
            if (w->kind_asyncgen) {
                PyObject *pair = PyObject_CallMethod(w->pred, "submit_stream", "OOsOO", coro, w->pred_id_var, id,
                                                     sdk_scope_var(), scope);
                if (pair && PyArg_ParseTuple(pair, "OO", &fut, &queue)) {
                    Py_INCREF(fut);
                    Py_INCREF(queue);
                }
                Py_XDECREF(pair);
            } else {
                fut = PyObject_CallMethod(w->pred, "submit", "OOsOO", coro, w->pred_id_var, id, sdk_scope_var(), scope);
            }
            Py_DECREF(coro);
            if (!fut) {
                fail_with_pyerr(&rc, "Prediction failed: ");
            } else {
                pthread_mutex_lock(&w->lock);
                s->future = fut;
                int early = s->cancelled;
                pthread_mutex_unlock(&w->lock);
                if (early) {
                    PyObject *r = PyObject_CallMethod(fut, "cancel", NULL);
                    Py_XDECREF(r);
                }
                if (queue) {
                    /* items as they are yielded, until the sentinel (the queue itself) */
                    stream = 1;
                    for (;;) {
                        PyObject *item = PyObject_CallMethod(queue, "get", NULL);
                        if (!item || item == queue) {
                            Py_XDECREF(item);
                            PyErr_Clear();
                            break;
                        }
                        int bad = rc.failed ? 0 : send_output(&rc, item, 0);
                        Py_DECREF(item);
                        if (bad) {
                            PyObject *r = PyObject_CallMethod(fut, "cancel", NULL);
                            Py_XDECREF(r);
                            PyErr_Clear();
                        }
                    }
                    Py_DECREF(queue);
                }
                result = PyObject_CallMethod(fut, "result", NULL);
                pthread_mutex_lock(&w->lock);
                s->future = NULL;
                pthread_mutex_unlock(&w->lock);
                Py_DECREF(fut);
                if (!result && rc.failed) {
                    PyErr_Clear(); /* we stopped it ourselves: a bad item already failed it */
                } else if (!result) {
                    char *e = format_pyerr();
                    /* cancelled when we cancelled it, or when it ended by a CancelledError; the
                     * original also treats any text containing "cancelled" as a cancel, so a
                     * ValueError("order cancelled") read as canceled there */
                    if (is_cancelled(w, s) || !strncmp(e, "CancelledError", 14)) {
                        cancelled = 1;
                        free(e);
                    } else {
                        buf out;
                        buf_init(&out, 1 << 20);
                        buf_printf(&out, "%s%s",
                                   w->is_train ? "Prediction failed: Async training failed: "
                                               : "Prediction failed: Async prediction failed: ",
                                   e);
                        free(e);
                        rc.failed = 1;
                        rc.error = buf_steal(&out);
                    }
                } else if (w->kind_asyncgen) {
                    Py_CLEAR(result); /* items already sent */
                } else if (PyObject_IsInstance(result, w->generator_type) == 1) {
                    stream = 1;
                    stream_iterable(&rc, result, "Prediction failed: Generator iteration error: ");
                    Py_CLEAR(result);
                }
            }
        }
    }
    Py_DECREF(args);
    if (cancelled || rc.failed)
        goto finish;
    if (result && !stream) {
        if (PyList_Check(result) || PyTuple_Check(result)) {
            stream = 1;
            PyObject *it = PyObject_GetIter(result);
            if (it) {
                stream_iterable(&rc, it, "Prediction failed: Failed to process output item: ");
                Py_DECREF(it);
            }
        } else if (result != Py_None) {
            final_text = encode_final(&rc, result, &final_len);
        }
    }

finish:
    if (!cancelled && rc.failed && is_cancelled(w, s))
        cancelled = 1;
    /* leave the contexts */
    if (scope_token) {
        PyObject *r = PyObject_CallMethod(sdk_scope_var(), "reset", "O", scope_token);
        Py_XDECREF(r);
        Py_DECREF(scope_token);
    }
    if (pid_token) {
        PyObject *r = PyObject_CallMethod(w->pred_id_var, "reset", "O", pid_token);
        Py_XDECREF(r);
        Py_DECREF(pid_token);
    }
    PyErr_Clear();
    if (scope) {
        sdk_scope_deactivate(scope);
        Py_DECREF(scope);
    }
    /* a partial last line printed without "\n" still belongs to this prediction */
    route_override = s;
    PyObject *sys_out = PySys_GetObject("stdout"), *sys_err = PySys_GetObject("stderr");
    if (sys_out && sdk_is_slot_writer(sys_out))
        sdk_slot_writer_flush_pending(sys_out);
    if (sys_err && sdk_is_slot_writer(sys_err))
        sdk_slot_writer_flush_pending(sys_err);
    route_override = NULL;
    PyErr_Clear();
    if (temps) {
        PyObject *r = PyObject_CallMethod(w->runtime, "cleanup", "O", temps);
        Py_XDECREF(r);
        Py_DECREF(temps);
        PyErr_Clear();
    }
    Py_XDECREF(result);
    Py_XDECREF(kwargs);
    Py_XDECREF(context);

    pthread_mutex_lock(&w->lock);
    s->running = 0;
    if (s->current_seq > s->finished_seq)
        s->finished_seq = s->current_seq;
    free(s->current_id);
    s->current_id = NULL;
    s->cancelled = 0;
    pthread_mutex_unlock(&w->lock);
    /* a cancel that raced the end must not fire in the next prediction */
    PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL);
    PyErr_Clear();

    json_t *msg;
    if (cancelled)
        msg = json_pack("{s:s, s:s}", "type", "cancelled", "id", id);
    else if (rc.failed)
        msg = json_pack("{s:s, s:s, s:s, s:s*, s:s*}", "type", "failed", "id", id, "error", rc.error ? rc.error : "",
                        "message", last_exc_message, "traceback", last_exc_traceback);
    else if (stream)
        msg = json_pack("{s:s, s:s, s:b}", "type", "done", "id", id, "is_stream", 1);
    else
        msg = json_pack("{s:s, s:s}", "type", "done", "id", id);
    int sent;
    if (final_text && !cancelled && !rc.failed) {
        /* one frame: the final value rides in `done` (ours to change, SPEC 7 leaves it unused) */
        size_t flen;
        char *frame = frame_encode_with_raw(msg, "output", final_text, final_len, &flen);
        json_decref(msg);
        sent = frame ? send_raw(s->fd, &s->write_lock, frame, flen, 1) : -1;
    } else {
        sent = send_slot(s, msg, 1);
    }
    free(final_text);
    if (sent != 0) {
        /* cannot reach the parent on this slot: poison it (SPEC 7.9) */
        s->poisoned = 1;
        send_control(w,
                     json_pack("{s:s, s:s, s:s}", "type", "failed", "slot", s->id, "error",
                               "Socket write error: cannot write to slot socket"),
                     1);
    }
    free(rc.error);
}

/* Each slot thread reads its own socket (no hand-off through the main thread) and runs
 * what arrives. EOF (the parent closed it, or shutdown) ends the thread. */
static void *slot_thread(void *arg) {
    wslot *s = arg;
    worker *w = the_worker;
    PyGILState_STATE g = PyGILState_Ensure();
    PyThreadState *ts = PyEval_SaveThread();
    char *chunk = malloc(65536);
    while (chunk && !w->quit) {
        ssize_t got = read(s->fd, chunk, 65536);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || frame_decoder_feed(&s->dec, chunk, (size_t)got) != BUF_OK)
            break;
        json_t *job;
        char err[256];
        int rc;
        while ((rc = frame_decoder_next(&s->dec, &job, err, sizeof err)) == 1) {
            const char *type = json_string_value(json_object_get(job, "type"));
            if (!strcmp(type, "predict")) {
                PyEval_RestoreThread(ts);
                run_prediction(w, s, job);
                ts = PyEval_SaveThread();
            }
            json_decref(job);
        }
        if (rc < 0) {
            /* a broken frame on a slot: that slot is done for (SPEC 7.9) */
            s->poisoned = 1;
            char text[300];
            snprintf(text, sizeof text, "Slot socket error: %s", err);
            send_control(w, json_pack("{s:s, s:s, s:s}", "type", "failed", "slot", s->id, "error", text), 0);
            break;
        }
    }
    free(chunk);
    PyEval_RestoreThread(ts);
    PyGILState_Release(g);
    return NULL;
}

/* ---- control (main thread, GIL released except where taken) ---- */

static void handle_cancel(worker *w, json_t *msg, PyThreadState **ts) {
    const char *slot_id = json_string_value(json_object_get(msg, "slot"));
    unsigned long long seq = (unsigned long long)json_integer_value(json_object_get(msg, "seq"));
    pthread_mutex_lock(&w->lock);
    wslot *s = NULL;
    for (int i = 0; i < w->num_slots; i++)
        if (slot_id && !strcmp(w->slots[i].id, slot_id))
            s = &w->slots[i];
    if (!s) {
        pthread_mutex_unlock(&w->lock);
        return;
    }
    /* Frames on the control channel can overtake the slot's predict frame: a cancel for a
     * dispatch not seen yet is kept and applied when it starts; one for a dispatch that
     * already ended is dropped. */
    int hit = s->running && (!seq || s->current_seq == seq);
    if (!hit) {
        if (seq > s->finished_seq)
            s->cancel_seq = seq; /* not started yet: applied when it starts */
        pthread_mutex_unlock(&w->lock);
        return;
    }
    s->cancelled = 1;
    unsigned long ident = s->thread_ident;
    pthread_mutex_unlock(&w->lock);
    PyEval_RestoreThread(*ts);
    pthread_mutex_lock(&w->lock);
    PyObject *fut = s->future;
    Py_XINCREF(fut);
    int still = s->running && s->cancelled;
    pthread_mutex_unlock(&w->lock);
    if (fut) {
        PyObject *r = PyObject_CallMethod(fut, "cancel", NULL);
        Py_XDECREF(r);
        Py_DECREF(fut);
        PyErr_Clear();
    } else if (still && !w->kind_async && !w->kind_asyncgen) {
        PyThreadState_SetAsyncExc(ident, w->cancel_exc);
    }
    *ts = PyEval_SaveThread();
}

/* The user's healthcheck runs on a thread of its own, so cancels and other control
 * frames keep flowing while it runs (the original blocks its control loop on it). */
typedef struct healthcheck_job {
    worker *w;
    char *id;
} healthcheck_job;

static void *healthcheck_thread(void *arg) {
    healthcheck_job *job = arg;
    worker *w = job->w;
    PyGILState_STATE g = PyGILState_Ensure();
    const char *status = "unhealthy", *error = "Healthcheck failed: internal error";
    PyObject *res = PyObject_CallMethod(w->pred, "run_healthcheck", NULL);
    char *err_copy = NULL;
    if (res && PyTuple_Check(res) && PyTuple_Size(res) == 2) {
        PyObject *st = PyTuple_GetItem(res, 0), *er = PyTuple_GetItem(res, 1);
        const char *s = st ? PyUnicode_AsUTF8AndSize(st, NULL) : NULL;
        status = s && !strcmp(s, "healthy") ? "healthy" : "unhealthy";
        error = NULL;
        if (er && er != Py_None) {
            const char *e = PyUnicode_AsUTF8AndSize(er, NULL);
            err_copy = e ? strdup(e) : NULL;
            error = err_copy;
        }
    }
    Py_XDECREF(res);
    PyErr_Clear();
    json_t *msg = json_pack("{s:s, s:s, s:s}", "type", "healthcheck_result", "id", job->id, "status", status);
    if (error)
        json_object_set_new(msg, "error", json_string(error));
    send_control(w, msg, 1);
    PyGILState_Release(g);
    free(err_copy);
    free(job->id);
    free(job);
    return NULL;
}

static void start_healthcheck(worker *w, const char *id) {
    healthcheck_job *job = calloc(1, sizeof *job);
    pthread_t t;
    pthread_attr_t attr;
    if (!job) {
        send_control(w,
                     json_pack("{s:s, s:s, s:s, s:s}", "type", "healthcheck_result", "id", id ? id : "", "status",
                               "unhealthy", "error", "Healthcheck error: out of memory"),
                     0);
        return;
    }
    job->w = w;
    job->id = strdup(id ? id : "");
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, healthcheck_thread, job) != 0) {
        /* the parent waits for an answer: give it one */
        send_control(w,
                     json_pack("{s:s, s:s, s:s, s:s}", "type", "healthcheck_result", "id", job->id, "status",
                               "unhealthy", "error", "Healthcheck error: cannot start the healthcheck thread"),
                     0);
        free(job->id);
        free(job);
    }
    pthread_attr_destroy(&attr);
}

static int handle_control(worker *w, json_t *msg, PyThreadState **ts) {
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!strcmp(type, "cancel")) {
        handle_cancel(w, msg, ts);
    } else if (!strcmp(type, "shutdown")) {
        send_control(w, json_pack("{s:s}", "type", "shutting_down"), 0);
        return 1;
    } else if (!strcmp(type, "healthcheck")) {
        start_healthcheck(w, json_string_value(json_object_get(msg, "id")));
    }
    return 0;
}

/* Reads control frames until shutdown or EOF. Called without the GIL. */
static void control_loop(worker *w, PyThreadState **ts) {
    frame_decoder ctl;
    frame_decoder_init(&ctl);
    char *chunk = malloc(65536);
    while (chunk) {
        ssize_t got = read(w->control_fd, chunk, 65536);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || frame_decoder_feed(&ctl, chunk, (size_t)got) != BUF_OK)
            break; /* parent gone */
        json_t *msg;
        char err[256];
        int rc, stop = 0;
        while (!stop && (rc = frame_decoder_next(&ctl, &msg, err, sizeof err)) == 1) {
            stop = handle_control(w, msg, ts);
            json_decref(msg);
        }
        if (stop || rc < 0)
            break;
    }
    free(chunk);
    frame_decoder_free(&ctl);
}

/* ---- setup ---- */

static void random_uuid(char *out) {
    unsigned char b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read_full(fd, b, sizeof b) != 0) {
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char)rand();
    }
    if (fd >= 0)
        close(fd);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static json_t *read_init(int fd, char *err, size_t errlen) {
    unsigned char h[4];
    if (read_full(fd, h, 4) != 0) {
        snprintf(err, errlen, "stdin closed before Init received");
        return NULL;
    }
    size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    if (n > FRAME_MAX_PAYLOAD) {
        snprintf(err, errlen, "Failed to read Init: frame too large");
        return NULL;
    }
    char *p = malloc(n + 1);
    if (!p || read_full(fd, p, n) != 0) {
        free(p);
        snprintf(err, errlen, "Failed to read Init: truncated frame");
        return NULL;
    }
    json_error_t jerr;
    json_t *msg = json_loadb(p, n, 0, &jerr);
    free(p);
    if (!msg) {
        snprintf(err, errlen, "Failed to read Init: %s", jerr.text);
        return NULL;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!type || strcmp(type, "init")) {
        snprintf(err, errlen, "Expected Init message, got: %s", type ? type : "?");
        json_decref(msg);
        return NULL;
    }
    return msg;
}

static int setup_failed(worker *w, const char *what) {
    char *e = format_pyerr();
    buf out;
    buf_init(&out, 1 << 20);
    buf_printf(&out, "Setup failed: %s: %s", what, e);
    free(e);
    send_control(w,
                 json_pack("{s:s, s:s, s:s}", "type", "failed", "slot", w->num_slots ? w->slots[0].id : "", "error",
                           out.data ? out.data : ""),
                 1);
    buf_free(&out);
    return -1;
}

static int get_bool_attr(PyObject *o, const char *name) {
    PyObject *v = PyObject_GetAttrString(o, name);
    int r = v ? PyObject_IsTrue(v) : 0;
    Py_XDECREF(v);
    PyErr_Clear();
    return r == 1;
}

/* Loads the predictor and runs setup. 0, or -1 after telling the parent. */
static int load_and_setup(worker *w, const char *ref) {
    w->runtime = PyImport_ImportModule("coglet._runtime");
    if (!w->runtime)
        return setup_failed(w, "failed to load predictor");
    PyObject *sdk = PyImport_ImportModule("coglet._sdk");
    if (!sdk) {
        PyErr_Clear();
        PyObject *impl = PyImport_ImportModule("coglet._impl");
        sdk = impl ? PyObject_GetAttrString(impl, "_sdk") : NULL;
        Py_XDECREF(impl);
    }
    PyObject *slot_writer = sdk ? PyObject_GetAttrString(sdk, "_SlotLogWriter") : NULL;
    PyObject *tee_writer = sdk ? PyObject_GetAttrString(sdk, "_TeeWriter") : NULL;
    PyObject *protected = slot_writer && tee_writer ? PyObject_CallMethod(w->runtime, "protect_std_streams", "OO",
                                                                          slot_writer, tee_writer)
                                                    : NULL;
    if (!protected)
        PyErr_Clear(); /* capture of replaced streams is best effort; predictions still run */
    Py_XDECREF(protected);
    Py_XDECREF(slot_writer);
    Py_XDECREF(tee_writer);
    Py_XDECREF(sdk);
    PyObject *cls = PyObject_GetAttrString(w->runtime, "Predictor");
    if (!cls)
        return setup_failed(w, "failed to load predictor");
    w->pred = PyObject_CallFunction(cls, "sO", ref, w->is_train ? Py_True : Py_False);
    Py_DECREF(cls);
    if (!w->pred)
        return setup_failed(w, "failed to load predictor");
    w->method = PyObject_GetAttrString(w->pred, "method");
    PyObject *kind = PyObject_GetAttrString(w->pred, "kind");
    PyObject *mname = PyObject_GetAttrString(w->pred, "method_name");
    if (!w->method || !kind || !mname) {
        Py_XDECREF(kind);
        Py_XDECREF(mname);
        return setup_failed(w, "failed to load predictor");
    }
    const char *k = PyUnicode_AsUTF8AndSize(kind, NULL);
    w->kind_async = k && !strcmp(k, "async");
    w->kind_asyncgen = k && !strcmp(k, "async_generator");
    const char *mn = PyUnicode_AsUTF8AndSize(mname, NULL);
    snprintf(w->method_name_buf, sizeof w->method_name_buf, "%s", mn ? mn : "predict");
    w->method_name = w->method_name_buf;
    Py_DECREF(kind);
    Py_DECREF(mname);
    PyErr_Clear();
    PyObject *co = PyObject_GetAttrString(w->pred, "coercions");
    w->has_coercions = co && PyObject_IsTrue(co) == 1;
    Py_XDECREF(co);
    w->training_unsupported = get_bool_attr(w->pred, "training_unsupported");
    PyErr_Clear();
    if (w->num_slots > 1 && !w->kind_async && !w->kind_asyncgen) {
        PyErr_SetString(PyExc_RuntimeError, "COG_MAX_CONCURRENCY > 1 requires an async run() or predict() method");
        char *e = format_pyerr();
        char text[512];
        /* the message alone, not "RuntimeError: ...", as SPEC 9.3 shows */
        snprintf(text, sizeof text, "Setup failed: setup failed: %s",
                 strstr(e, ": ") ? strstr(e, ": ") + 2 : e);
        free(e);
        send_control(w, json_pack("{s:s, s:s, s:s}", "type", "failed", "slot", w->slots[0].id, "error", text), 1);
        return -1;
    }
    PyObject *r = PyObject_CallMethod(w->pred, "setup", NULL);
    if (!r)
        return setup_failed(w, "setup failed");
    Py_DECREF(r);
    return 0;
}

static void worker_free(worker *w) {
    for (int i = 0; i < w->num_slots; i++) {
        wslot *s = &w->slots[i];
        free(s->current_id);
        frame_decoder_free(&s->dec);
        pthread_mutex_destroy(&s->write_lock);
    }
    free(w->slots);
    Py_XDECREF(w->runtime);
    Py_XDECREF(w->pred);
    Py_XDECREF(w->method);
    Py_XDECREF(w->pred_id_var);
    Py_XDECREF(w->generator_type);
    Py_XDECREF(w->pathlike_type);
    Py_XDECREF(w->iobase_type);
}

static int install_writers(void) {
    static const char *names[] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *orig = PySys_GetObject(names[i]); /* borrowed */
        if (!orig || sdk_is_slot_writer(orig))
            continue;
        PyObject *wr = sdk_slot_writer_new(orig, names[i]);
        if (!wr || PySys_SetObject(names[i], wr) < 0) {
            Py_XDECREF(wr);
            return -1;
        }
        Py_DECREF(wr);
    }
    return 0;
}

static PyObject *import_attr(const char *module, const char *name) {
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

PyObject *coglet_run_worker(PyObject *module) {
    static worker w;
    memset(&w, 0, sizeof w);
    w.control_fd = 3;
    pthread_mutex_init(&w.control_lock, NULL);
    pthread_mutex_init(&w.lock, NULL);
    w.cancel_exc = coglet_cancelation_exception(module);
    coglet_set_worker_active(1);

    /* Ctrl-C reaches the whole process group; the parent decides what it means. */
    PyObject *sig = PyImport_ImportModule("signal");
    PyObject *ign = sig ? PyObject_GetAttrString(sig, "SIG_IGN") : NULL;
    if (ign) {
        PyObject *r = PyObject_CallMethod(sig, "signal", "iO", SIGINT, ign);
        Py_XDECREF(r);
    }
    Py_XDECREF(ign);
    Py_XDECREF(sig);
    PyErr_Clear();
    if (install_writers() < 0)
        return NULL;
    w.generator_type = import_attr("types", "GeneratorType");
    w.pathlike_type = import_attr("os", "PathLike");
    w.iobase_type = import_attr("io", "IOBase");
    PyObject *cv_cls = import_attr("contextvars", "ContextVar");
    if (!w.generator_type || !w.pathlike_type || !w.iobase_type || !cv_cls) {
        Py_XDECREF(cv_cls);
        return NULL;
    }
    w.pred_id_var = PyObject_CallFunction(cv_cls, "s", "_coglet_prediction_id");
    Py_DECREF(cv_cls);
    if (!w.pred_id_var)
        return NULL;

    char err[256];
    json_t *init;
    Py_BEGIN_ALLOW_THREADS init = read_init(w.control_fd, err, sizeof err);
    Py_END_ALLOW_THREADS if (!init) {
        PyErr_SetString(PyExc_RuntimeError, err);
        return NULL;
    }
    const char *ref = json_string_value(json_object_get(init, "predictor_ref"));
    json_int_t num_slots = json_integer_value(json_object_get(init, "num_slots"));
    json_t *ti = json_object_get(json_object_get(init, "transport_info"), "InheritedFds");
    json_int_t first_fd = json_integer_value(json_object_get(ti, "first_fd"));
    w.is_train = json_is_true(json_object_get(init, "is_train"));
    if (!ref || num_slots < 1 || num_slots > 100000 || first_fd < 3) {
        json_decref(init);
        PyErr_SetString(PyExc_RuntimeError, "Failed to create handler: bad init message");
        return NULL;
    }
    w.num_slots = (int)num_slots;
    w.slots = calloc((size_t)w.num_slots, sizeof *w.slots);
    if (!w.slots) {
        json_decref(init);
        return PyErr_NoMemory();
    }
    for (int i = 0; i < w.num_slots; i++) {
        wslot *s = &w.slots[i];
        s->index = i;
        s->fd = (int)first_fd + i;
        pthread_mutex_init(&s->write_lock, NULL);
        frame_decoder_init(&s->dec);
        random_uuid(s->id);
    }
    the_worker = &w;
    worker_log(&w, "info", "File descriptor redirection complete", 1);
    worker_log(&w, "info", "Connected to slot transport", 1);

    char *refcopy = strdup(ref);
    json_decref(init);
    int ok = refcopy && load_and_setup(&w, refcopy) == 0;
    free(refcopy);
    PyErr_Clear();
    if (!ok) {
        the_worker = NULL;
        worker_free(&w);
        Py_RETURN_NONE; /* the parent was told; the worker exits after setup failure */
    }

    PyObject *schema_obj = PyObject_CallMethod(w.runtime, "read_schema", "O", w.pred);
    json_t *schema = NULL;
    if (schema_obj && schema_obj != Py_None)
        schema = json_from_py(&w, schema_obj, 0);
    Py_XDECREF(schema_obj);
    PyErr_Clear();
    json_t *slots = json_array();
    for (int i = 0; i < w.num_slots; i++)
        json_array_append_new(slots, json_string(w.slots[i].id));
    PyObject *hc = PyObject_GetAttrString(w.pred, "healthcheck");
    int has_hc = hc && hc != Py_None;
    Py_XDECREF(hc);
    PyErr_Clear();
    /* Everything import and setup made lives as long as the worker: frozen out of the
     * collector's view, a full collection no longer walks it during a prediction. */
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *frozen = gc ? PyObject_CallMethod(gc, "freeze", NULL) : NULL;
    Py_XDECREF(frozen);
    /* Predictions allocate mostly short-lived objects that reference counting frees; a
     * young-generation pass every 700 allocations mostly finds nothing and shows up as
     * latency outliers (p99 191 -> 119 us with the collector off, measured). Collect
     * less often, not never. */
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
    json_t *ready = json_pack("{s:s, s:o, s:b}", "type", "ready", "slots", slots, "has_healthcheck", has_hc);
    if (schema)
        json_object_set_new(ready, "schema", schema);
    if (send_frame(w.control_fd, &w.control_lock, ready, 1) == -2 && schema) {
        /* a schema over the frame cap: ready without it, and say why */
        json_object_del(ready, "schema");
        worker_log(&w, "warn", "OpenAPI schema over the 8 MiB frame limit; serving without a schema", 1);
        send_frame(w.control_fd, &w.control_lock, ready, 1);
    }
    json_decref(ready);
    for (int i = 0; i < w.num_slots; i++)
        send_slot(&w.slots[i], json_pack("{s:s, s:i}", "type", "protocol_version", "version", 1), 1);

    for (int i = 0; i < w.num_slots; i++) {
        if (pthread_create(&w.slots[i].thread, NULL, slot_thread, &w.slots[i]) == 0)
            w.slots[i].thread_started = 1;
    }
    PyThreadState *ts = PyEval_SaveThread();
    control_loop(&w, &ts);
    /* stop: idle slot threads exit; a busy one would hold us forever, so then we leave hard */
    pthread_mutex_lock(&w.lock);
    w.quit = 1;
    int busy = 0;
    for (int i = 0; i < w.num_slots; i++)
        busy |= w.slots[i].running;
    pthread_mutex_unlock(&w.lock);
    for (int i = 0; i < w.num_slots; i++)
        shutdown(w.slots[i].fd, SHUT_RD); /* wakes a thread blocked in read() */
    if (busy) {
        PyEval_RestoreThread(ts);
        PyObject *out = PySys_GetObject("stdout");
        if (out) {
            PyObject *r = PyObject_CallMethod(out, "flush", NULL);
            Py_XDECREF(r);
        }
        PyErr_Clear();
        _exit(0);
    }
    for (int i = 0; i < w.num_slots; i++)
        if (w.slots[i].thread_started)
            pthread_join(w.slots[i].thread, NULL);
    PyEval_RestoreThread(ts);
    the_worker = NULL;
    worker_free(&w);
    Py_RETURN_NONE;
}
