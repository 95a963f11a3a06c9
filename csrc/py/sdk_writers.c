/* py/sdk_writers.c: coglet._sdk's stream writers: _SlotLogWriter (the worker's sys.stdout and
 * sys.stderr: complete lines go to the worker's route_log hook) and _TeeWriter (a stream user
 * code installed, still captured). */
#include "py/sdk_internal.h"

#include <stdlib.h>
#include <string.h>

/* Swallow an Exception raised by a best-effort stream call. BaseExceptions that are not
 * Exceptions (KeyboardInterrupt, coglet.CancelationException injected by a cancel) propagate:
 * swallowing them would lose the cancellation. Returns 0 if swallowed, -1 to propagate. */
static int swallow_exception(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear();
    return 0;
}

/* `stream.encoding`, or "utf-8" when the stream has none. */
static PyObject *stream_encoding(PyObject *stream) {
    PyObject *encoding = PyObject_GetAttrString(stream, "encoding");
    if (encoding == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;
        PyErr_Clear();
    } else if (encoding != Py_None) {
        return encoding;
    }
    Py_XDECREF(encoding);
    return PyUnicode_FromString("utf-8");
}

/* One emission to the worker; dropped when no worker registered its hooks. */
static void route_log(PyObject *writer, const char *source, const char *data, size_t len) {
    sdk_state *st = sdk_state_of(writer);
    if (st->hooks)
        st->hooks->route_log(st->hooks_ctx, source, data, len);
}

/* ---- _SlotLogWriter ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *original; /* the stream this writer replaced */
    const char *source; /* "stdout" or "stderr" (static) */
    char *pending;      /* partial line not yet emitted; belongs to the writer, not a prediction */
    size_t pending_len;
    size_t pending_cap;
    int closed;
} slot_log_writer;

static int pending_append(slot_log_writer *self, const char *data, size_t len) {
    if (len == 0)
        return 0;
    if (len > self->pending_cap - self->pending_len) {
        size_t cap = self->pending_cap ? self->pending_cap : 256;
        while (cap - self->pending_len < len) {
            if (cap > ((size_t)PY_SSIZE_T_MAX) / 2) {
                PyErr_NoMemory();
                return -1;
            }
            cap *= 2;
        }
        char *grown = realloc(self->pending, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->pending = grown;
        self->pending_cap = cap;
    }
    memcpy(self->pending + self->pending_len, data, len);
    self->pending_len += len;
    return 0;
}

/* Takes the buffer out of the writer before routing: the route_log hook may release the GIL, and
 * another thread's write must then find a consistent (empty) buffer. */
static void slot_writer_emit_pending(slot_log_writer *self) {
    if (self->pending_len == 0)
        return;
    char *data = self->pending;
    size_t len = self->pending_len;
    self->pending = NULL;
    self->pending_len = self->pending_cap = 0;
    route_log((PyObject *)self, self->source, data, len);
    free(data);
}

/* Buffers `data`; if a newline is now buffered, emits everything up to and including the last
 * one as a single routing call and keeps the rest. */
static int slot_writer_buffer(slot_log_writer *self, const char *data, size_t len) {
    size_t head = len;
    while (head > 0 && data[head - 1] != '\n')
        head--;
    if (head == 0)
        return pending_append(self, data, len);
    if (self->pending_len == 0) {
        /* Common case (whole lines): route straight from `data`, which the caller keeps alive. */
        if (pending_append(self, data + head, len - head) < 0)
            return -1;
        route_log((PyObject *)self, self->source, data, head);
        return 0;
    }
    size_t emit_len = self->pending_len + head;
    char *emit = malloc(emit_len);
    if (emit == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(emit, self->pending, self->pending_len);
    memcpy(emit + self->pending_len, data, head);
    self->pending_len = 0;
    if (pending_append(self, data + head, len - head) < 0) {
        free(emit);
        return -1;
    }
    route_log((PyObject *)self, self->source, emit, emit_len);
    free(emit);
    return 0;
}

static PyObject *slot_writer_write(PyObject *op, PyObject *data) {
    slot_log_writer *self = (slot_log_writer *)op;
    if (!PyUnicode_Check(data))
        return sdk_type_error("write() argument must be str, not %U", data);
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(data, &len);
    if (utf8 == NULL)
        return NULL;
    if (!self->closed && len > 0 && slot_writer_buffer(self, utf8, (size_t)len) < 0)
        return NULL;
    return PyLong_FromSsize_t(len);
}

static PyObject *slot_writer_emit_data(PyObject *op, PyObject *data) {
    slot_log_writer *self = (slot_log_writer *)op;
    if (!PyUnicode_Check(data))
        return sdk_type_error("emit_data() argument must be str, not %U", data);
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(data, &len);
    if (utf8 == NULL)
        return NULL;
    if (len > 0)
        route_log((PyObject *)self, self->source, utf8, (size_t)len);
    Py_RETURN_NONE;
}

static PyObject *slot_writer_flush(PyObject *op, PyObject *unused) {
    (void)unused;
    slot_log_writer *self = (slot_log_writer *)op;
    slot_writer_emit_pending(self);
    PyObject *result = PyObject_CallMethod(self->original, "flush", NULL);
    if (result == NULL)
        return NULL;
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *slot_writer_close(PyObject *op, PyObject *unused) {
    (void)unused;
    ((slot_log_writer *)op)->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *slot_writer_writable(PyObject *op, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(!((slot_log_writer *)op)->closed);
}

static PyObject *slot_writer_isatty(PyObject *op, PyObject *unused) {
    (void)unused;
    return PyObject_CallMethod(((slot_log_writer *)op)->original, "isatty", NULL);
}

static PyObject *slot_writer_fileno(PyObject *op, PyObject *unused) {
    (void)unused;
    return PyObject_CallMethod(((slot_log_writer *)op)->original, "fileno", NULL);
}

static PyObject *slot_writer_get_closed(PyObject *op, void *closure) {
    (void)closure;
    return PyBool_FromLong(((slot_log_writer *)op)->closed);
}

static PyObject *slot_writer_get_encoding(PyObject *op, void *closure) {
    (void)closure;
    return stream_encoding(((slot_log_writer *)op)->original);
}

static PyObject *slot_writer_get_buffer(PyObject *op, void *closure) {
    (void)closure;
    PyObject *original = ((slot_log_writer *)op)->original;
    PyObject *buffer = PyObject_GetAttrString(original, "buffer");
    if (buffer != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return buffer;
    PyErr_Clear();
    Py_INCREF(original);
    return original;
}

static int slot_writer_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((slot_log_writer *)self)->original);
    return 0;
}

static int slot_writer_clear(PyObject *self) {
    slot_log_writer *writer = (slot_log_writer *)self;
    PyObject *original = writer->original;
    writer->original = NULL;
    Py_XDECREF(original);
    return 0;
}

static void slot_writer_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    slot_writer_clear(self);
    free(((slot_log_writer *)self)->pending);
    sdk_free_instance(self);
}

static PyMethodDef slot_writer_methods[] = {
    {"write", slot_writer_write, METH_O, "Buffer text; complete lines are routed to the worker."},
    {"emit_data", slot_writer_emit_data, METH_O, "Route text immediately, without buffering."},
    {"flush", slot_writer_flush, METH_NOARGS, "Emit the partial line, then flush the original."},
    {"close", slot_writer_close, METH_NOARGS, "Mark closed; later writes are ignored."},
    {"readable", sdk_return_false, METH_NOARGS, NULL},
    {"seekable", sdk_return_false, METH_NOARGS, NULL},
    {"writable", slot_writer_writable, METH_NOARGS, NULL},
    {"isatty", slot_writer_isatty, METH_NOARGS, NULL},
    {"fileno", slot_writer_fileno, METH_NOARGS, NULL},
    {"__enter__", sdk_return_self, METH_NOARGS, NULL},
    {"__exit__", sdk_return_false, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef slot_writer_getset[] = {
    {"closed", slot_writer_get_closed, NULL, NULL, NULL},
    {"encoding", slot_writer_get_encoding, NULL, NULL, NULL},
    {"newlines", sdk_return_none_getter, NULL, NULL, NULL},
    {"buffer", slot_writer_get_buffer, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot slot_writer_slots[] = {
    {Py_tp_doc, "sys.stdout/sys.stderr in the worker: routes lines to the current prediction."},
    {Py_tp_dealloc, slot_writer_dealloc},
    {Py_tp_traverse, slot_writer_traverse},
    {Py_tp_clear, slot_writer_clear},
    {Py_tp_methods, slot_writer_methods},
    {Py_tp_getset, slot_writer_getset},
    {0, NULL},
};

PyType_Spec sdk_slot_writer_spec = {
    .name = "coglet._sdk._SlotLogWriter",
    .basicsize = sizeof(slot_log_writer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = slot_writer_slots,
};

PyObject *sdk_slot_writer_new(PyObject *sdk, PyObject *original, const char *source) {
    sdk_state *st = (sdk_state *)PyModule_GetState(sdk);
    if (st->slot_writer_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "coglet._sdk is not initialized");
        return NULL;
    }
    const char *static_source;
    if (strcmp(source, "stdout") == 0)
        static_source = "stdout";
    else if (strcmp(source, "stderr") == 0)
        static_source = "stderr";
    else {
        PyErr_Format(PyExc_ValueError, "invalid log source: %s", source);
        return NULL;
    }
    slot_log_writer *self = (slot_log_writer *)sdk_alloc_instance(st->slot_writer_type);
    if (self == NULL)
        return NULL;
    Py_INCREF(original);
    self->original = original;
    self->source = static_source;
    return (PyObject *)self;
}

int sdk_slot_writer_flush_pending(PyObject *sdk, PyObject *writer) {
    if (!sdk_is_slot_writer(sdk, writer)) {
        PyErr_SetString(PyExc_TypeError, "expected a _SlotLogWriter");
        return -1;
    }
    slot_writer_emit_pending((slot_log_writer *)writer);
    return 0;
}

int sdk_is_slot_writer(PyObject *sdk, PyObject *obj) {
    sdk_state *st = (sdk_state *)PyModule_GetState(sdk);
    return obj != NULL && st->slot_writer_type != NULL && PyObject_TypeCheck(obj, st->slot_writer_type);
}

/* ---- _TeeWriter ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *inner;       /* the _SlotLogWriter */
    PyObject *user_stream; /* what user code assigned to sys.stdout/sys.stderr */
    PyObject *name;        /* "stdout" or "stderr" */
    int closed;
} tee_writer;

static PyObject *tee_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"inner", "user_stream", "name", NULL};
    PyObject *inner, *user_stream, *name;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOU:_TeeWriter", kwlist, &inner, &user_stream,
                                     &name))
        return NULL;
    tee_writer *self = (tee_writer *)sdk_alloc_instance(type);
    if (self == NULL)
        return NULL;
    Py_INCREF(inner);
    Py_INCREF(user_stream);
    Py_INCREF(name);
    self->inner = inner;
    self->user_stream = user_stream;
    self->name = name;
    return (PyObject *)self;
}

/* Calls stream.method(arg) (no argument if arg is NULL), swallowing Exceptions. 0 or -1. */
static int call_best_effort(PyObject *stream, const char *method, PyObject *arg) {
    PyObject *result = arg != NULL ? PyObject_CallMethod(stream, method, "O", arg)
                                   : PyObject_CallMethod(stream, method, NULL);
    if (result != NULL) {
        Py_DECREF(result);
        return 0;
    }
    return swallow_exception();
}

static PyObject *tee_write(PyObject *op, PyObject *data) {
    tee_writer *self = (tee_writer *)op;
    if (!PyUnicode_Check(data))
        return sdk_type_error("write() argument must be str, not %U", data);
    Py_ssize_t len;
    if (PyUnicode_AsUTF8AndSize(data, &len) == NULL)
        return NULL;
    if (call_best_effort(self->inner, "write", data) < 0 ||
        call_best_effort(self->user_stream, "write", data) < 0)
        return NULL;
    return PyLong_FromSsize_t(len);
}

static PyObject *tee_flush(PyObject *op, PyObject *unused) {
    (void)unused;
    tee_writer *self = (tee_writer *)op;
    if (call_best_effort(self->inner, "flush", NULL) < 0 ||
        call_best_effort(self->user_stream, "flush", NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *tee_close(PyObject *op, PyObject *unused) {
    (void)unused;
    ((tee_writer *)op)->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *tee_writable(PyObject *op, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(!((tee_writer *)op)->closed);
}

static PyObject *tee_isatty(PyObject *op, PyObject *unused) {
    (void)unused;
    return PyObject_CallMethod(((tee_writer *)op)->user_stream, "isatty", NULL);
}

static PyObject *tee_fileno(PyObject *op, PyObject *unused) {
    (void)unused;
    return PyObject_CallMethod(((tee_writer *)op)->user_stream, "fileno", NULL);
}

static PyObject *tee_get_inner(PyObject *op, void *closure) {
    (void)closure;
    PyObject *inner = ((tee_writer *)op)->inner;
    Py_INCREF(inner);
    return inner;
}

static PyObject *tee_get_user_stream(PyObject *op, void *closure) {
    (void)closure;
    PyObject *user_stream = ((tee_writer *)op)->user_stream;
    Py_INCREF(user_stream);
    return user_stream;
}

static PyObject *tee_get_name(PyObject *op, void *closure) {
    (void)closure;
    PyObject *name = ((tee_writer *)op)->name;
    Py_INCREF(name);
    return name;
}

static PyObject *tee_get_closed(PyObject *op, void *closure) {
    (void)closure;
    return PyBool_FromLong(((tee_writer *)op)->closed);
}

static PyObject *tee_get_encoding(PyObject *op, void *closure) {
    (void)closure;
    return stream_encoding(((tee_writer *)op)->user_stream);
}

static int tee_traverse(PyObject *self, visitproc visit, void *arg) {
    tee_writer *tee = (tee_writer *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(tee->inner);
    Py_VISIT(tee->user_stream);
    Py_VISIT(tee->name);
    return 0;
}

static int tee_clear(PyObject *self) {
    tee_writer *tee = (tee_writer *)self;
    PyObject *inner = tee->inner, *user_stream = tee->user_stream, *name = tee->name;
    tee->inner = tee->user_stream = tee->name = NULL;
    Py_XDECREF(inner);
    Py_XDECREF(user_stream);
    Py_XDECREF(name);
    return 0;
}

static void tee_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    tee_clear(self);
    sdk_free_instance(self);
}

static PyMethodDef tee_methods[] = {
    {"write", tee_write, METH_O, "Write to inner, then to user_stream; errors are swallowed."},
    {"flush", tee_flush, METH_NOARGS, "Flush both streams, ignoring errors."},
    {"close", tee_close, METH_NOARGS, NULL},
    {"readable", sdk_return_false, METH_NOARGS, NULL},
    {"seekable", sdk_return_false, METH_NOARGS, NULL},
    {"writable", tee_writable, METH_NOARGS, NULL},
    {"isatty", tee_isatty, METH_NOARGS, NULL},
    {"fileno", tee_fileno, METH_NOARGS, NULL},
    {"__enter__", sdk_return_self, METH_NOARGS, NULL},
    {"__exit__", sdk_return_false, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tee_getset[] = {
    {"inner", tee_get_inner, NULL, NULL, NULL},
    {"user_stream", tee_get_user_stream, NULL, NULL, NULL},
    {"name", tee_get_name, NULL, NULL, NULL},
    {"closed", tee_get_closed, NULL, NULL, NULL},
    {"encoding", tee_get_encoding, NULL, NULL, NULL},
    {"newlines", sdk_return_none_getter, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Anything a _TeeWriter does not define is the user's stream's: code that replaced
 * sys.stdout with a StringIO still calls getvalue() on what it finds there. */
static PyObject *tee_getattro(PyObject *self, PyObject *name) {
    PyObject *v = PyObject_GenericGetAttr(self, name);
    if (v || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return v;
    tee_writer *t = (tee_writer *)self;
    if (!t->user_stream)
        return NULL;
    PyErr_Clear();
    return PyObject_GetAttr(t->user_stream, name);
}

static PyType_Slot tee_slots[] = {
    {Py_tp_getattro, tee_getattro},
    {Py_tp_doc, "_TeeWriter(inner, user_stream, name)\n--\n\n"
                "Writes to the coglet log writer and to a stream user code installed."},
    {Py_tp_new, tee_new},
    {Py_tp_dealloc, tee_dealloc},
    {Py_tp_traverse, tee_traverse},
    {Py_tp_clear, tee_clear},
    {Py_tp_methods, tee_methods},
    {Py_tp_getset, tee_getset},
    {0, NULL},
};

PyType_Spec sdk_tee_writer_spec = {
    .name = "coglet._sdk._TeeWriter",
    .basicsize = sizeof(tee_writer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = tee_slots,
};
