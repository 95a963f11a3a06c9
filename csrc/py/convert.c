/* py/convert.c: Python <-> jansson, once for the worker's outputs and the sdk's metric values:
 * the same NaN, integer and depth rules for both (see convert.h). */
#include "py/convert.h"

#include <math.h>

#include "common/bignum.h"
#include "common/json_in.h"

/* encode_other steps in a row for one value (a pydantic model's dump, then an enum's value...):
 * a conversion that never reaches a JSON type stops here instead of recursing forever. */
#define PYJSON_MAX_STEPS 16

static json_t *convert(const pyjson_rules *r, PyObject *o, int depth, int steps);

static json_t *checked(json_t *j) {
    if (!j)
        PyErr_NoMemory();
    return j;
}

static json_t *unsupported(const pyjson_rules *r, PyObject *o) {
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(o), "__name__");
    if (name) {
        PyErr_Format(PyExc_TypeError, r->unsupported ? r->unsupported : "Object of type %U is not JSON serializable",
                     name);
        Py_DECREF(name);
    }
    return NULL;
}

static json_t *from_long(PyObject *o) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (!overflow)
        return checked(json_integer(v));
    /* beyond 64 bits: a bignum of its decimal text, as json.dumps writes it (which raises
     * ValueError past sys.get_int_max_str_digits(), as this does) */
    PyObject *text = PyNumber_ToBase(o, 10);
    if (!text)
        return NULL;
    Py_ssize_t n;
    const char *digits = PyUnicode_AsUTF8AndSize(text, &n);
    json_t *j = digits ? checked(bignum_from_text(digits, (size_t)n)) : NULL;
    Py_DECREF(text);
    return j;
}

static json_t *from_float(PyObject *o) {
    double d = PyFloat_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    if (!isfinite(d)) {
        PyErr_SetString(PyExc_ValueError, "Out of range float values are not JSON compliant");
        return NULL;
    }
    return checked(json_real(d));
}

static json_t *from_str(PyObject *o) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s)
        return NULL;
    return checked(json_stringn_nocheck(s, (size_t)n)); /* Python's UTF-8 is valid UTF-8 */
}

static int enter_container(int depth) {
    if (depth < PYJSON_MAX_DEPTH)
        return 0;
    PyErr_Format(PyExc_ValueError, "value nested more than %d levels deep", PYJSON_MAX_DEPTH);
    return -1;
}

/* A list or a tuple. Items are re-read by index: code run by encode_other may change a list. */
static json_t *from_sequence(const pyjson_rules *r, PyObject *o, int depth) {
    if (enter_container(depth) < 0)
        return NULL;
    int is_list = PyList_Check(o);
    json_t *arr = checked(json_array());
    if (!arr)
        return NULL;
    for (Py_ssize_t i = 0; i < (is_list ? PyList_Size(o) : PyTuple_Size(o)); i++) {
        PyObject *item = is_list ? PyList_GetItem(o, i) : PyTuple_GetItem(o, i);
        if (!item)
            goto failed;
        Py_INCREF(item);
        json_t *j = convert(r, item, depth + 1, 0);
        Py_DECREF(item);
        if (!j)
            goto failed;
        if (json_array_append_new(arr, j) < 0) {
            PyErr_NoMemory();
            goto failed;
        }
    }
    return arr;
failed:
    json_decref(arr);
    return NULL;
}

/* A dict key as JSON text (a new str): str keys as they are; with loose containers the other
 * keys json.dumps accepts too. */
static PyObject *key_text(const pyjson_rules *r, PyObject *k) {
    if (PyUnicode_Check(k)) {
        Py_INCREF(k);
        return k;
    }
    if (r->loose_containers) {
        if (k == Py_True)
            return PyUnicode_FromString("true");
        if (k == Py_False)
            return PyUnicode_FromString("false");
        if (k == Py_None)
            return PyUnicode_FromString("null");
        if (PyLong_Check(k) || PyFloat_Check(k))
            return PyObject_Repr(k);
        PyErr_SetString(PyExc_TypeError, "keys must be str, int, float, bool or None");
        return NULL;
    }
    unsupported(r, k);
    return NULL;
}

static json_t *from_dict(const pyjson_rules *r, PyObject *o, int depth) {
    if (enter_container(depth) < 0)
        return NULL;
    json_t *obj = checked(json_object());
    if (!obj)
        return NULL;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(o, &pos, &k, &v)) {
        PyObject *text = key_text(r, k);
        if (!text)
            goto failed;
        Py_ssize_t klen;
        const char *key = PyUnicode_AsUTF8AndSize(text, &klen);
        Py_INCREF(v); /* borrowed from the dict, which code run by encode_other may change */
        json_t *j = key ? convert(r, v, depth + 1, 0) : NULL;
        Py_DECREF(v);
        int rc = j ? json_object_setn_new_nocheck(obj, key, (size_t)klen, j) : -1; /* frees j on failure */
        Py_DECREF(text);
        if (rc < 0) {
            if (j)
                PyErr_NoMemory();
            goto failed;
        }
    }
    return obj;
failed:
    json_decref(obj);
    return NULL;
}

/* Not a JSON type: one step of the caller's encoding, then convert what it gave. */
static json_t *from_other(const pyjson_rules *r, PyObject *o, int depth, int steps) {
    if (!r->encode_other || steps >= PYJSON_MAX_STEPS)
        return unsupported(r, o);
    PyObject *step = PyObject_CallFunctionObjArgs(r->encode_other, o, NULL);
    if (!step)
        return NULL;
    json_t *j = Py_TYPE(step) == Py_TYPE(o) ? unsupported(r, o) : convert(r, step, depth, steps + 1);
    Py_DECREF(step);
    return j;
}

static json_t *convert(const pyjson_rules *r, PyObject *o, int depth, int steps) {
    if (o == Py_None)
        return checked(json_null());
    if (o == Py_True)
        return checked(json_true());
    if (o == Py_False)
        return checked(json_false());
    if (PyLong_Check(o))
        return from_long(o);
    if (PyFloat_Check(o))
        return from_float(o);
    if (PyUnicode_Check(o))
        return from_str(o);
    if (PyList_Check(o) || (r->loose_containers && PyTuple_Check(o)))
        return from_sequence(r, o, depth);
    if (PyDict_Check(o))
        return from_dict(r, o, depth);
    return from_other(r, o, depth, steps);
}

json_t *pyjson_from_py(PyObject *value, const pyjson_rules *rules) { return convert(rules, value, 0, 0); }

/* ---- JSON -> Python: the parser capped the nesting at JSON_IN_MAX_DEPTH; so does this ---- */

static PyObject *to_py(const json_t *j, int depth);

static PyObject *list_to_py(const json_t *j, int depth) {
    size_t n = json_array_size(j);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = to_py(json_array_get(j, i), depth + 1);
        if (!v || PyList_SetItem(list, (Py_ssize_t)i, v) < 0) { /* SetItem steals v */
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

static PyObject *object_to_py(const json_t *j, int depth) {
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    const char *k;
    size_t klen;
    json_t *v;
    void *tmp;
    json_object_keylen_foreach_safe((json_t *)j, tmp, k, klen, v) {
        PyObject *key = PyUnicode_FromStringAndSize(k, (Py_ssize_t)klen);
        PyObject *val = key ? to_py(v, depth + 1) : NULL;
        int rc = val ? PyDict_SetItem(d, key, val) : -1;
        Py_XDECREF(key);
        Py_XDECREF(val);
        if (rc < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static PyObject *string_to_py(const json_t *j) {
    const char *digits = bignum_text(j, NULL);
    if (digits) /* an integer beyond 64 bits, exactly as json.loads gives it */
        return PyLong_FromString(digits, NULL, 10);
    return PyUnicode_FromStringAndSize(json_string_value(j), (Py_ssize_t)json_string_length(j));
}

static PyObject *to_py(const json_t *j, int depth) {
    if (depth > JSON_IN_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "value nested more than %d levels deep", JSON_IN_MAX_DEPTH);
        return NULL;
    }
    switch (json_typeof(j)) {
    case JSON_NULL: Py_RETURN_NONE;
    case JSON_TRUE: Py_RETURN_TRUE;
    case JSON_FALSE: Py_RETURN_FALSE;
    case JSON_INTEGER: return PyLong_FromLongLong(json_integer_value(j));
    case JSON_REAL: return PyFloat_FromDouble(json_real_value(j));
    case JSON_STRING: return string_to_py(j);
    case JSON_ARRAY: return list_to_py(j, depth);
    case JSON_OBJECT: return object_to_py(j, depth);
    }
    Py_RETURN_NONE;
}

PyObject *pyjson_to_py(const json_t *j) { return to_py(j, 0); }
