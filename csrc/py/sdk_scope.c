/* py/sdk_scope.c: coglet._sdk's Scope and MetricRecorder: one scope per prediction, the
 * metric type rules (docs/predictors.md, "Metrics and context"; the name rules are
 * common/metric_name.c), values converted by
 * py/convert.c and sent through the worker's hooks. */
#include "py/convert.h"
#include "py/sdk_internal.h"

#include "common/metric_name.h"

#include <string.h>

#define METRIC_NAME_MSG_LEN 512
#define METRIC_SEND_ERR_LEN 256

static int require_str(PyObject *obj, const char *argname) {
    if (PyUnicode_Check(obj))
        return 0;
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), "__name__");
    if (name != NULL) {
        PyErr_Format(PyExc_TypeError, "argument '%s' must be str, not %U", argname, name);
        Py_DECREF(name);
    }
    return -1;
}

/* ---- metric names: the rules are plain C (common/metric_name.c) ---- */

static int validate_metric_name(const char *name, size_t len, int reserved) {
    metric_name_error err;
    if (metric_name_check(name, len, reserved, &err) == METRIC_NAME_OK)
        return 0;
    char msg[METRIC_NAME_MSG_LEN];
    metric_name_message(&err, msg, sizeof msg);
    PyErr_SetString(PyExc_ValueError, msg);
    return -1;
}

/* ---- metric values ---------------------------------------------------------------------------- */

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

/* Nested items may be None, bool, int, float, str, list or dict with str keys. */
static const pyjson_rules metric_rules = {
    .loose_containers = 0,
    .encode_other = NULL,
    .unsupported = "Cannot convert %U to JSON metric value",
};

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
        sdk_type_error("argument 'mode' must be str or None, not %U", mode);
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

static PyObject *recorder_new(sdk_state *st, void *slot, int active) {
    metric_recorder *self = (metric_recorder *)sdk_alloc_instance(st->recorder_type);
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
    char err[METRIC_SEND_ERR_LEN] = "no active prediction";
    sdk_state *st = sdk_state_of((PyObject *)self);
    if (st->hooks && self->slot) {
        const char *wire = metric_mode_wire[mode];
        if (st->hooks->send_metric(st->hooks_ctx, self->slot, name, value, wire, err, sizeof err) == 0)
            return 0;
    } else {
        json_decref(value);
    }
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
        sdk_type_error("Unsupported metric value type: %U. Expected bool, int, float, str, "
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
    json = pyjson_from_py(value, &metric_rules);
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
    json_t *null = json_null();
    if (null == NULL) {
        PyErr_NoMemory();
        return -1;
    }
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
    sdk_free_instance(self);
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

PyType_Spec sdk_recorder_spec = {
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

PyObject *sdk_scope_create(sdk_state *st, PyObject *context, void *slot, int active) {
    if (st->scope_type == NULL || st->recorder_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "coglet._sdk is not initialized");
        return NULL;
    }
    metric_scope *self = (metric_scope *)sdk_alloc_instance(st->scope_type);
    if (self == NULL)
        return NULL;
    self->recorder = recorder_new(st, slot, active);
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
    sdk_free_instance(self);
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

PyType_Spec sdk_scope_spec = {
    .name = "coglet._sdk.Scope",
    .basicsize = sizeof(metric_scope),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = scope_slots,
};

void sdk_scope_deactivate(PyObject *sdk, PyObject *scope) {
    sdk_state *st = (sdk_state *)PyModule_GetState(sdk);
    if (scope == NULL || st->scope_type == NULL || !PyObject_TypeCheck(scope, st->scope_type))
        return;
    metric_recorder *recorder = (metric_recorder *)((metric_scope *)scope)->recorder;
    if (recorder == NULL)
        return;
    recorder->active = 0;
    recorder->slot = NULL;
}
