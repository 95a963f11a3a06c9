/* py/sdk.c: coglet._sdk: per-prediction metric scopes and recorders (spec 2.5, 2.6, 8.8), and the
 * writers installed as sys.stdout/sys.stderr that feed the worker's log routing (spec 2.7, 8.5). */
#include "py/sdk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define METRIC_NAME_MAX_BYTES 128
#define METRIC_NAME_MAX_SEGMENTS 4
#define METRIC_SEND_ERR_LEN 256

#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif

/* The worker runs one interpreter and these objects are process-wide by nature (the sync scope is
 * what every thread of a sync prediction sees), so they live in C globals guarded by the GIL. */
static struct {
    PyTypeObject *scope_type;
    PyTypeObject *recorder_type;
    PyTypeObject *slot_writer_type;
    PyTypeObject *tee_writer_type;
    PyObject *scope_var;  /* ContextVar _coglet_metric_scope */
    PyObject *sync_scope; /* current sync prediction's Scope, or NULL */
} sdk_state;

/* ---- small helpers ------------------------------------------------------------------------ */

static PyObject *alloc_instance(PyTypeObject *type) {
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    return alloc(type, 0);
}

/* Heap-type instances own a reference to their type, dropped after the memory is freed. */
static void free_instance(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self);
    Py_DECREF(type);
}

static PyObject *type_name_of(PyObject *obj) {
    return PyObject_GetAttrString((PyObject *)Py_TYPE(obj), "__name__");
}

/* TypeError "{fmt with %U = type name of obj}"; always returns NULL. */
static PyObject *type_error_with_type(const char *fmt, PyObject *obj) {
    PyObject *name = type_name_of(obj);
    if (name == NULL)
        return NULL;
    PyErr_Format(PyExc_TypeError, fmt, name);
    Py_DECREF(name);
    return NULL;
}

static int require_str(PyObject *obj, const char *argname) {
    if (PyUnicode_Check(obj))
        return 0;
    PyObject *name = type_name_of(obj);
    if (name != NULL) {
        PyErr_Format(PyExc_TypeError, "argument '%s' must be str, not %U", argname, name);
        Py_DECREF(name);
    }
    return -1;
}

static json_t *json_or_nomem(json_t *json) {
    if (json == NULL)
        PyErr_NoMemory();
    return json;
}

/* Swallow an Exception raised by a best-effort stream call. BaseExceptions that are not
 * Exceptions (KeyboardInterrupt, coglet.CancelationException injected by a cancel) propagate:
 * swallowing them would lose the cancellation. Returns 0 if swallowed, -1 to propagate. */
static int swallow_exception(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear();
    return 0;
}

static PyObject *return_self(PyObject *self, PyObject *unused) {
    (void)unused;
    Py_INCREF(self);
    return self;
}

static PyObject *return_false(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    Py_RETURN_FALSE;
}

static PyObject *return_none_getter(PyObject *self, void *closure) {
    (void)self;
    (void)closure;
    Py_RETURN_NONE;
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

/* ---- metric names (spec 2.6) ---------------------------------------------------------------- */

static int is_ascii_letter(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_ascii_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}

static size_t utf8_char_len(unsigned char lead) {
    if (lead < 0x80)
        return 1;
    if ((lead & 0xE0) == 0xC0)
        return 2;
    if ((lead & 0xF0) == 0xE0)
        return 3;
    return 4;
}

/* ValueError "{fmt}" where fmt has one %U for the segment. */
static int segment_error(const char *fmt, const char *seg, size_t seg_len) {
    PyObject *segment = PyUnicode_FromStringAndSize(seg, (Py_ssize_t)seg_len);
    if (segment == NULL)
        return -1;
    PyErr_Format(PyExc_ValueError, fmt, segment);
    Py_DECREF(segment);
    return -1;
}

static int invalid_char_error(const char *seg, size_t seg_len, const char *c, size_t c_len) {
    PyObject *segment = PyUnicode_FromStringAndSize(seg, (Py_ssize_t)seg_len);
    PyObject *ch = PyUnicode_FromStringAndSize(c, (Py_ssize_t)c_len);
    if (segment != NULL && ch != NULL)
        PyErr_Format(PyExc_ValueError,
                     "metric name segment '%U' contains invalid character '%U'", segment, ch);
    Py_XDECREF(segment);
    Py_XDECREF(ch);
    return -1;
}

static int validate_segment(const char *seg, size_t len, size_t index, size_t count) {
    if (len == 0) {
        const char *msg = index == 0           ? "metric name must not start with a dot"
                          : index == count - 1 ? "metric name must not end with a dot"
                                               : "metric name must not contain empty segments "
                                                 "(consecutive dots)";
        PyErr_SetString(PyExc_ValueError, msg);
        return -1;
    }
    if (!is_ascii_letter((unsigned char)seg[0]))
        return segment_error("metric name segment '%U' must start with a letter", seg, len);
    for (size_t i = 0; i + 1 < len; i++) {
        if (seg[i] == '_' && seg[i + 1] == '_')
            return segment_error("metric name segment '%U' must not contain consecutive "
                                 "underscores",
                                 seg, len);
    }
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)seg[i];
        if (is_ascii_letter(c) || is_ascii_digit(c) || c == '_') {
            i++;
            continue;
        }
        size_t c_len = utf8_char_len(c);
        if (c_len > len - i)
            c_len = len - i;
        return invalid_char_error(seg, len, seg + i, c_len);
    }
    if (seg[len - 1] == '_')
        return segment_error("metric name segment '%U' must end with a letter or digit", seg, len);
    return 0;
}

/* The name rules in spec order; `reserved` adds rules 1-2 (record checks them, delete does not). */
static int validate_metric_name(const char *name, size_t len, int reserved) {
    if (reserved) {
        if (len == strlen("predict_time") && memcmp(name, "predict_time", len) == 0) {
            PyErr_SetString(PyExc_ValueError, "'predict_time' is reserved by the runtime");
            return -1;
        }
        if (len >= 4 && memcmp(name, "cog.", 4) == 0) {
            PyErr_SetString(PyExc_ValueError, "the 'cog.' prefix is reserved for system metrics");
            return -1;
        }
    }
    if (len == 0) {
        PyErr_SetString(PyExc_ValueError, "metric name must not be empty");
        return -1;
    }
    if (len > METRIC_NAME_MAX_BYTES) {
        PyErr_Format(PyExc_ValueError,
                     "metric name must be 128 characters or fewer (got %zd characters)",
                     (Py_ssize_t)len);
        return -1;
    }
    size_t count = 1;
    for (size_t i = 0; i < len; i++)
        count += name[i] == '.';
    if (count > METRIC_NAME_MAX_SEGMENTS) {
        PyErr_Format(PyExc_ValueError,
                     "metric name must have at most 4 dot-separated segments (got %zd)",
                     (Py_ssize_t)count);
        return -1;
    }
    size_t start = 0, index = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] != '.')
            continue;
        if (validate_segment(name + start, i - start, index, count) < 0)
            return -1;
        start = i + 1;
        index++;
    }
    return 0;
}

/* ---- metric values (spec 2.6 steps 4 and 7) ------------------------------------------------- */

/* The type a key is pinned to, or NULL if `value` is not a metric value. bool before int. */
static const char *metric_type_of(PyObject *value) {
    if (PyBool_Check(value))
        return "bool";
    if (PyLong_Check(value))
        return "int";
    if (PyFloat_Check(value))
        return "float";
    if (PyUnicode_Check(value))
        return "str";
    if (PyList_Check(value))
        return "list";
    if (PyDict_Check(value))
        return "dict";
    return NULL;
}

static json_t *int_to_json(PyObject *obj) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (!overflow)
        return json_or_nomem(json_integer(v));
    /* Beyond 64 bits (and, as jansson has no unsigned integers, beyond int64): a float. */
    double d = PyLong_AsDouble(obj);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    return json_or_nomem(json_real(d));
}

static json_t *float_to_json(PyObject *obj) {
    double d = PyFloat_AsDouble(obj);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    /* JSON has no NaN/Infinity; serde_json turns them into null, and so do we. */
    return json_or_nomem(isfinite(d) ? json_real(d) : json_null());
}

static json_t *str_to_json(PyObject *obj) {
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &len);
    if (utf8 == NULL)
        return NULL;
    return json_or_nomem(json_stringn(utf8, (size_t)len));
}

static json_t *value_to_json(PyObject *obj);

static json_t *list_to_json(PyObject *list) {
    json_t *array = json_or_nomem(json_array());
    if (array == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_Size(list); i++) {
        PyObject *item = PyList_GetItem(list, i);
        if (item == NULL)
            goto failed;
        Py_INCREF(item);
        json_t *json = value_to_json(item);
        Py_DECREF(item);
        if (json == NULL)
            goto failed;
        if (json_array_append_new(array, json) < 0) {
            PyErr_NoMemory();
            goto failed;
        }
    }
    return array;
failed:
    json_decref(array);
    return NULL;
}

static json_t *dict_to_json(PyObject *dict) {
    json_t *object = json_or_nomem(json_object());
    if (object == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyUnicode_Check(key)) {
            type_error_with_type("Cannot convert %U to JSON metric value", key);
            goto failed;
        }
        Py_ssize_t key_len;
        const char *key_utf8 = PyUnicode_AsUTF8AndSize(key, &key_len);
        if (key_utf8 == NULL)
            goto failed;
        Py_INCREF(key);
        Py_INCREF(value);
        json_t *json = value_to_json(value);
        int rc = json == NULL ? -1 : json_object_setn_new(object, key_utf8, (size_t)key_len, json);
        Py_DECREF(value);
        Py_DECREF(key);
        if (rc < 0) {
            if (json != NULL)
                PyErr_NoMemory();
            goto failed;
        }
    }
    return object;
failed:
    json_decref(object);
    return NULL;
}

/* Python -> jansson for metric values; NULL with TypeError for anything else. */
static json_t *value_to_json(PyObject *obj) {
    if (obj == Py_None)
        return json_or_nomem(json_null());
    if (PyBool_Check(obj))
        return json_or_nomem(json_boolean(obj == Py_True));
    if (PyLong_Check(obj))
        return int_to_json(obj);
    if (PyFloat_Check(obj))
        return float_to_json(obj);
    if (PyUnicode_Check(obj))
        return str_to_json(obj);
    if (PyList_Check(obj) || PyDict_Check(obj)) {
        /* Self-containing lists and dicts end in RecursionError, not a C stack overflow. */
        if (Py_EnterRecursiveCall(" while converting a metric value to JSON"))
            return NULL;
        json_t *json = PyList_Check(obj) ? list_to_json(obj) : dict_to_json(obj);
        Py_LeaveRecursiveCall();
        return json;
    }
    type_error_with_type("Cannot convert %U to JSON metric value", obj);
    return NULL;
}

/* ---- MetricRecorder ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    void *slot;      /* worker slot; meaningless once inactive */
    int active;      /* 0 for no-op scopes and after the prediction ended */
    PyObject *types; /* dict: metric name -> type name, for the per-key type invariant */
} metric_recorder;

typedef enum { METRIC_REPLACE, METRIC_INCREMENT, METRIC_APPEND } metric_mode;

static const char *const metric_mode_wire[] = {"replace", "increment", "append"};

static int parse_metric_mode(PyObject *mode, metric_mode *out) {
    if (mode == NULL || mode == Py_None) {
        *out = METRIC_REPLACE;
        return 0;
    }
    if (!PyUnicode_Check(mode)) {
        PyObject *name = type_name_of(mode);
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "argument 'mode' must be str or None, not %U", name);
            Py_DECREF(name);
        }
        return -1;
    }
    if (PyUnicode_CompareWithASCIIString(mode, "replace") == 0)
        *out = METRIC_REPLACE;
    else if (PyUnicode_CompareWithASCIIString(mode, "incr") == 0 ||
             PyUnicode_CompareWithASCIIString(mode, "increment") == 0)
        *out = METRIC_INCREMENT;
    else if (PyUnicode_CompareWithASCIIString(mode, "append") == 0)
        *out = METRIC_APPEND;
    else {
        PyErr_Format(PyExc_TypeError,
                     "Invalid metric mode: '%U'. Expected 'replace', 'incr', or 'append'.", mode);
        return -1;
    }
    return 0;
}

static PyObject *recorder_new(void *slot, int active) {
    metric_recorder *self = (metric_recorder *)alloc_instance(sdk_state.recorder_type);
    if (self == NULL)
        return NULL;
    self->types = PyDict_New();
    if (self->types == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->slot = slot;
    self->active = active;
    return (PyObject *)self;
}

static int recorder_send(metric_recorder *self, const char *name, json_t *value, metric_mode mode,
                         const char *what) {
    char err[METRIC_SEND_ERR_LEN] = "";
    if (worker_send_metric(self->slot, name, value, metric_mode_wire[mode], err, sizeof err) == 0)
        return 0;
    err[sizeof err - 1] = '\0';
    PyErr_Format(PyExc_IOError, "Failed to send %s: %s", what, err);
    return -1;
}

static int recorder_record(metric_recorder *self, PyObject *key, PyObject *value,
                           PyObject *mode_obj) {
    metric_mode mode;
    if (require_str(key, "key") < 0 || parse_metric_mode(mode_obj, &mode) < 0)
        return -1;
    if (!self->active)
        return 0;
    Py_ssize_t len;
    const char *name = PyUnicode_AsUTF8AndSize(key, &len);
    if (name == NULL || validate_metric_name(name, (size_t)len, 1) < 0)
        return -1;
    const char *type = metric_type_of(value);
    if (type == NULL) {
        type_error_with_type("Unsupported metric value type: %U. Expected bool, int, float, str, "
                             "list, or dict.",
                             value);
        return -1;
    }
    /* An exact str copy as the dict key: a str subclass could bring its own __eq__/__hash__. */
    PyObject *name_key = PyUnicode_FromStringAndSize(name, len);
    if (name_key == NULL)
        return -1;
    json_t *json = NULL;
    PyObject *old_type = PyDict_GetItemWithError(self->types, name_key);
    if (old_type == NULL && PyErr_Occurred())
        goto failed;
    if (old_type != NULL && PyUnicode_CompareWithASCIIString(old_type, type) != 0) {
        PyErr_Format(PyExc_TypeError,
                     "Metric '%U' has type %U, cannot set to %s without deleting first", name_key,
                     old_type, type);
        goto failed;
    }
    if (mode == METRIC_INCREMENT && strcmp(type, "int") != 0 && strcmp(type, "float") != 0) {
        PyErr_Format(PyExc_TypeError, "Increment mode requires int or float, got %s", type);
        goto failed;
    }
    json = value_to_json(value);
    if (json == NULL)
        goto failed;
    if (old_type == NULL) {
        PyObject *type_str = PyUnicode_InternFromString(type);
        int rc = type_str == NULL ? -1 : PyDict_SetItem(self->types, name_key, type_str);
        Py_XDECREF(type_str);
        if (rc < 0)
            goto failed;
    }
    Py_DECREF(name_key);
    return recorder_send(self, name, json, mode, "metric"); /* steals json */
failed:
    json_decref(json);
    Py_DECREF(name_key);
    return -1;
}

static int recorder_delete(metric_recorder *self, PyObject *key) {
    if (require_str(key, "key") < 0)
        return -1;
    if (!self->active)
        return 0;
    Py_ssize_t len;
    const char *name = PyUnicode_AsUTF8AndSize(key, &len);
    if (name == NULL || validate_metric_name(name, (size_t)len, 0) < 0)
        return -1;
    PyObject *name_key = PyUnicode_FromStringAndSize(name, len);
    if (name_key == NULL)
        return -1;
    int present = PyDict_Contains(self->types, name_key);
    if (present > 0)
        present = PyDict_DelItem(self->types, name_key);
    Py_DECREF(name_key);
    if (present < 0)
        return -1;
    json_t *null = json_or_nomem(json_null());
    if (null == NULL)
        return -1;
    return recorder_send(self, name, null, METRIC_REPLACE, "metric delete");
}

static PyObject *recorder_record_method(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"key", "value", "mode", NULL};
    PyObject *key, *value, *mode = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:record", kwlist, &key, &value, &mode))
        return NULL;
    if (recorder_record((metric_recorder *)self, key, value, mode) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *recorder_delete_method(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"key", NULL};
    PyObject *key;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:delete", kwlist, &key))
        return NULL;
    if (recorder_delete((metric_recorder *)self, key) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int recorder_ass_subscript(PyObject *self, PyObject *key, PyObject *value) {
    metric_recorder *recorder = (metric_recorder *)self;
    if (value == NULL || value == Py_None)
        return recorder_delete(recorder, key);
    PyObject *replace = PyUnicode_FromString("replace");
    if (replace == NULL)
        return -1;
    int rc = recorder_record(recorder, key, value, replace);
    Py_DECREF(replace);
    return rc;
}

static PyObject *recorder_repr(PyObject *self) {
    metric_recorder *recorder = (metric_recorder *)self;
    if (!recorder->active)
        return PyUnicode_FromString("MetricRecorder(inactive)");
    return PyUnicode_FromFormat("MetricRecorder(keys=%zd)", PyDict_Size(recorder->types));
}

static int recorder_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((metric_recorder *)self)->types);
    return 0;
}

static int recorder_clear(PyObject *self) {
    metric_recorder *recorder = (metric_recorder *)self;
    PyObject *types = recorder->types;
    recorder->types = NULL;
    Py_XDECREF(types);
    return 0;
}

static void recorder_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    free_instance(self);
}

static PyMethodDef recorder_methods[] = {
    {"record", (PyCFunction)(void (*)(void))recorder_record_method, METH_VARARGS | METH_KEYWORDS,
     "record(key, value, mode=None)\n--\n\nRecord a metric for the current prediction. "
     "mode: 'replace' (default), 'incr'/'increment' or 'append'."},
    {"delete", (PyCFunction)(void (*)(void))recorder_delete_method, METH_VARARGS | METH_KEYWORDS,
     "delete(key)\n--\n\nDelete a metric and forget its type."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot recorder_slots[] = {
    {Py_tp_doc, "Records metrics for one prediction; a no-op once the prediction ended."},
    {Py_tp_dealloc, recorder_dealloc},
    {Py_tp_traverse, recorder_traverse},
    {Py_tp_clear, recorder_clear},
    {Py_tp_repr, recorder_repr},
    {Py_tp_methods, recorder_methods},
    {Py_mp_ass_subscript, recorder_ass_subscript},
    {0, NULL},
};

static PyType_Spec recorder_spec = {
    .name = "coglet._sdk.MetricRecorder",
    .basicsize = sizeof(metric_recorder),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = recorder_slots,
};

/* ---- Scope ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *recorder; /* MetricRecorder, same object for the scope's life */
    PyObject *context;  /* the request's context dict, same object for the scope's life */
} metric_scope;

static PyObject *scope_create(PyObject *context, void *slot, int active) {
    if (sdk_state.scope_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "coglet._sdk is not initialized");
        return NULL;
    }
    metric_scope *self = (metric_scope *)alloc_instance(sdk_state.scope_type);
    if (self == NULL)
        return NULL;
    self->recorder = recorder_new(slot, active);
    if (self->recorder == NULL)
        goto failed;
    if (context != NULL) {
        Py_INCREF(context);
        self->context = context;
    } else if ((self->context = PyDict_New()) == NULL) {
        goto failed;
    }
    return (PyObject *)self;
failed:
    Py_DECREF(self);
    return NULL;
}

/* A scope cleared by the cycle collector can still be reached from a finalizer. */
static PyObject *scope_member(PyObject *member) {
    if (member == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Scope has been cleared");
        return NULL;
    }
    Py_INCREF(member);
    return member;
}

static PyObject *scope_get_metrics(PyObject *self, void *closure) {
    (void)closure;
    return scope_member(((metric_scope *)self)->recorder);
}

static PyObject *scope_get_context(PyObject *self, void *closure) {
    (void)closure;
    return scope_member(((metric_scope *)self)->context);
}

static PyObject *scope_record_metric(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"key", "value", "mode", NULL};
    PyObject *key, *value, *mode = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:record_metric", kwlist, &key, &value,
                                     &mode))
        return NULL;
    PyObject *recorder = scope_member(((metric_scope *)self)->recorder);
    if (recorder == NULL)
        return NULL;
    int rc = recorder_record((metric_recorder *)recorder, key, value, mode);
    Py_DECREF(recorder);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *scope_repr(PyObject *self) {
    PyObject *recorder = scope_member(((metric_scope *)self)->recorder);
    if (recorder == NULL)
        return NULL;
    PyObject *repr = PyUnicode_FromFormat("Scope(%R)", recorder);
    Py_DECREF(recorder);
    return repr;
}

static int scope_traverse(PyObject *self, visitproc visit, void *arg) {
    metric_scope *scope = (metric_scope *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(scope->recorder);
    Py_VISIT(scope->context);
    return 0;
}

static int scope_clear(PyObject *self) {
    metric_scope *scope = (metric_scope *)self;
    PyObject *recorder = scope->recorder, *context = scope->context;
    scope->recorder = NULL;
    scope->context = NULL;
    Py_XDECREF(recorder);
    Py_XDECREF(context);
    return 0;
}

static void scope_dealloc(PyObject *self) {
    PyObject_GC_UnTrack(self);
    scope_clear(self);
    free_instance(self);
}

static PyGetSetDef scope_getset[] = {
    {"metrics", scope_get_metrics, NULL, "The prediction's MetricRecorder.", NULL},
    {"context", scope_get_context, NULL, "The request's context dict.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef scope_methods[] = {
    {"record_metric", (PyCFunction)(void (*)(void))scope_record_metric,
     METH_VARARGS | METH_KEYWORDS,
     "record_metric(key, value, mode=None)\n--\n\nSame as metrics.record(key, value, mode)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot scope_slots[] = {
    {Py_tp_doc, "The metric scope of one prediction (or a no-op scope outside predictions)."},
    {Py_tp_dealloc, scope_dealloc},
    {Py_tp_traverse, scope_traverse},
    {Py_tp_clear, scope_clear},
    {Py_tp_repr, scope_repr},
    {Py_tp_methods, scope_methods},
    {Py_tp_getset, scope_getset},
    {0, NULL},
};

static PyType_Spec scope_spec = {
    .name = "coglet._sdk.Scope",
    .basicsize = sizeof(metric_scope),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = scope_slots,
};

PyObject *sdk_scope_new(PyObject *context, void *slot) {
    return scope_create(context, slot, 1);
}

void sdk_scope_deactivate(PyObject *scope) {
    if (scope == NULL || sdk_state.scope_type == NULL ||
        !PyObject_TypeCheck(scope, sdk_state.scope_type))
        return;
    metric_recorder *recorder = (metric_recorder *)((metric_scope *)scope)->recorder;
    if (recorder == NULL)
        return;
    recorder->active = 0;
    recorder->slot = NULL;
}

PyObject *sdk_scope_var(void) {
    return sdk_state.scope_var;
}

void sdk_set_sync_scope(PyObject *scope) {
    PyObject *old = sdk_state.sync_scope;
    Py_XINCREF(scope);
    sdk_state.sync_scope = scope;
    Py_XDECREF(old); /* last: a finalizer may run and look at the state */
}

static PyObject *sdk_current_scope(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    if (sdk_state.scope_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "coglet._sdk is not initialized");
        return NULL;
    }
    PyObject *scope = PyObject_CallMethod(sdk_state.scope_var, "get", NULL);
    if (scope == NULL || scope != Py_None)
        return scope;
    Py_DECREF(scope);
    if (sdk_state.sync_scope != NULL) {
        Py_INCREF(sdk_state.sync_scope);
        return sdk_state.sync_scope;
    }
    return scope_create(NULL, NULL, 0);
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

/* Takes the buffer out of the writer before routing: worker_route_log may release the GIL, and
 * another thread's write must then find a consistent (empty) buffer. */
static void slot_writer_emit_pending(slot_log_writer *self) {
    if (self->pending_len == 0)
        return;
    char *data = self->pending;
    size_t len = self->pending_len;
    self->pending = NULL;
    self->pending_len = self->pending_cap = 0;
    worker_route_log(self->source, data, len);
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
        worker_route_log(self->source, data, head);
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
    worker_route_log(self->source, emit, emit_len);
    free(emit);
    return 0;
}

static PyObject *slot_writer_write(PyObject *op, PyObject *data) {
    slot_log_writer *self = (slot_log_writer *)op;
    if (!PyUnicode_Check(data))
        return type_error_with_type("write() argument must be str, not %U", data);
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
        return type_error_with_type("emit_data() argument must be str, not %U", data);
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(data, &len);
    if (utf8 == NULL)
        return NULL;
    if (len > 0)
        worker_route_log(self->source, utf8, (size_t)len);
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
    free_instance(self);
}

static PyMethodDef slot_writer_methods[] = {
    {"write", slot_writer_write, METH_O, "Buffer text; complete lines are routed to the worker."},
    {"emit_data", slot_writer_emit_data, METH_O, "Route text immediately, without buffering."},
    {"flush", slot_writer_flush, METH_NOARGS, "Emit the partial line, then flush the original."},
    {"close", slot_writer_close, METH_NOARGS, "Mark closed; later writes are ignored."},
    {"readable", return_false, METH_NOARGS, NULL},
    {"seekable", return_false, METH_NOARGS, NULL},
    {"writable", slot_writer_writable, METH_NOARGS, NULL},
    {"isatty", slot_writer_isatty, METH_NOARGS, NULL},
    {"fileno", slot_writer_fileno, METH_NOARGS, NULL},
    {"__enter__", return_self, METH_NOARGS, NULL},
    {"__exit__", return_false, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef slot_writer_getset[] = {
    {"closed", slot_writer_get_closed, NULL, NULL, NULL},
    {"encoding", slot_writer_get_encoding, NULL, NULL, NULL},
    {"newlines", return_none_getter, NULL, NULL, NULL},
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

static PyType_Spec slot_writer_spec = {
    .name = "coglet._sdk._SlotLogWriter",
    .basicsize = sizeof(slot_log_writer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = slot_writer_slots,
};

PyObject *sdk_slot_writer_new(PyObject *original, const char *source) {
    if (sdk_state.slot_writer_type == NULL) {
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
    slot_log_writer *self = (slot_log_writer *)alloc_instance(sdk_state.slot_writer_type);
    if (self == NULL)
        return NULL;
    Py_INCREF(original);
    self->original = original;
    self->source = static_source;
    return (PyObject *)self;
}

int sdk_slot_writer_flush_pending(PyObject *writer) {
    if (!sdk_is_slot_writer(writer)) {
        PyErr_SetString(PyExc_TypeError, "expected a _SlotLogWriter");
        return -1;
    }
    slot_writer_emit_pending((slot_log_writer *)writer);
    return 0;
}

int sdk_is_slot_writer(PyObject *obj) {
    return obj != NULL && sdk_state.slot_writer_type != NULL &&
           PyObject_TypeCheck(obj, sdk_state.slot_writer_type);
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
    tee_writer *self = (tee_writer *)alloc_instance(type);
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
        return type_error_with_type("write() argument must be str, not %U", data);
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
    free_instance(self);
}

static PyMethodDef tee_methods[] = {
    {"write", tee_write, METH_O, "Write to inner, then to user_stream; errors are swallowed."},
    {"flush", tee_flush, METH_NOARGS, "Flush both streams, ignoring errors."},
    {"close", tee_close, METH_NOARGS, NULL},
    {"readable", return_false, METH_NOARGS, NULL},
    {"seekable", return_false, METH_NOARGS, NULL},
    {"writable", tee_writable, METH_NOARGS, NULL},
    {"isatty", tee_isatty, METH_NOARGS, NULL},
    {"fileno", tee_fileno, METH_NOARGS, NULL},
    {"__enter__", return_self, METH_NOARGS, NULL},
    {"__exit__", return_false, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tee_getset[] = {
    {"inner", tee_get_inner, NULL, NULL, NULL},
    {"user_stream", tee_get_user_stream, NULL, NULL, NULL},
    {"name", tee_get_name, NULL, NULL, NULL},
    {"closed", tee_get_closed, NULL, NULL, NULL},
    {"encoding", tee_get_encoding, NULL, NULL, NULL},
    {"newlines", return_none_getter, NULL, NULL, NULL},
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

static PyType_Spec tee_spec = {
    .name = "coglet._sdk._TeeWriter",
    .basicsize = sizeof(tee_writer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = tee_slots,
};

/* ---- module --------------------------------------------------------------------------------- */

static PyMethodDef sdk_functions[] = {
    {"current_scope", sdk_current_scope, METH_NOARGS,
     "current_scope()\n--\n\nThe current prediction's Scope, or a no-op Scope outside one."},
    {NULL, NULL, 0, NULL},
};

static const char sdk_doc[] =
    "Internal SDK runtime integration for coglet.\n\n"
    "current_scope() returns the metric Scope of the running prediction (a no-op Scope outside\n"
    "one). _SlotLogWriter and _TeeWriter are the worker's sys.stdout/sys.stderr.";

static PyObject *make_scope_var(void) {
    PyObject *contextvars = PyImport_ImportModule("contextvars");
    if (contextvars == NULL)
        return NULL;
    PyObject *var = NULL, *args = NULL, *kwargs = NULL;
    PyObject *cls = PyObject_GetAttrString(contextvars, "ContextVar");
    if (cls == NULL)
        goto done;
    args = Py_BuildValue("(s)", "_coglet_metric_scope");
    kwargs = Py_BuildValue("{s:O}", "default", Py_None);
    if (args != NULL && kwargs != NULL)
        var = PyObject_Call(cls, args, kwargs);
done:
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(cls);
    Py_DECREF(contextvars);
    return var;
}

static PyTypeObject *add_type(PyObject *module, PyType_Spec *spec) {
    PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (type == NULL)
        return NULL;
    if (PyModule_AddType(module, type) < 0) {
        Py_DECREF(type);
        return NULL;
    }
    return type;
}

int sdk_init(PyObject *module) {
    PyTypeObject *scope_type = NULL, *recorder_type = NULL, *slot_writer_type = NULL,
                 *tee_type = NULL;
    PyObject *scope_var = NULL, *all = NULL;
    if ((scope_type = add_type(module, &scope_spec)) == NULL ||
        (recorder_type = add_type(module, &recorder_spec)) == NULL ||
        (slot_writer_type = add_type(module, &slot_writer_spec)) == NULL ||
        (tee_type = add_type(module, &tee_spec)) == NULL)
        goto failed;
    if ((scope_var = make_scope_var()) == NULL)
        goto failed;
    if (PyModule_AddFunctions(module, sdk_functions) < 0 ||
        PyModule_SetDocString(module, sdk_doc) < 0)
        goto failed;
    all = Py_BuildValue("[sss]", "MetricRecorder", "Scope", "current_scope");
    if (all == NULL || PyModule_AddObjectRef(module, "__all__", all) < 0)
        goto failed;
    Py_DECREF(all);

    /* Replace any previous state only once everything succeeded. */
    PyTypeObject *old_types[] = {sdk_state.scope_type, sdk_state.recorder_type,
                                 sdk_state.slot_writer_type, sdk_state.tee_writer_type};
    PyObject *old_var = sdk_state.scope_var;
    sdk_state.scope_type = scope_type;
    sdk_state.recorder_type = recorder_type;
    sdk_state.slot_writer_type = slot_writer_type;
    sdk_state.tee_writer_type = tee_type;
    sdk_state.scope_var = scope_var;
    for (size_t i = 0; i < sizeof old_types / sizeof old_types[0]; i++)
        Py_XDECREF(old_types[i]);
    Py_XDECREF(old_var);
    return 0;

failed:
    Py_XDECREF(all);
    Py_XDECREF(scope_var);
    Py_XDECREF(tee_type);
    Py_XDECREF(slot_writer_type);
    Py_XDECREF(recorder_type);
    Py_XDECREF(scope_type);
    return -1;
}
