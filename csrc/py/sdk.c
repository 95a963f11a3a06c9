/* py/sdk.c: the coglet._sdk module: its PyModuleDef and state (types, the scope ContextVar,
 * the sync scope, the worker's hooks), current_scope(), and the calls the worker makes.
 * Scopes and recorders are in sdk_scope.c, the stream writers in sdk_writers.c. */
#include "py/sdk_internal.h"

#include <string.h>

/* ---- helpers the types share ---- */

PyObject *sdk_alloc_instance(PyTypeObject *type) {
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    return alloc(type, 0);
}

/* Heap-type instances own a reference to their type, dropped after the memory is freed. */
void sdk_free_instance(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self);
    Py_DECREF(type);
}

PyObject *sdk_type_error(const char *fmt, PyObject *obj) {
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), "__name__");
    if (name == NULL)
        return NULL;
    PyErr_Format(PyExc_TypeError, fmt, name);
    Py_DECREF(name);
    return NULL;
}

PyObject *sdk_return_self(PyObject *self, PyObject *unused) {
    (void)unused;
    Py_INCREF(self);
    return self;
}

PyObject *sdk_return_false(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    Py_RETURN_FALSE;
}

PyObject *sdk_return_none_getter(PyObject *self, void *closure) {
    (void)self;
    (void)closure;
    Py_RETURN_NONE;
}

/* ---- what the worker calls ---- */

static sdk_state *module_state(PyObject *sdk) { return (sdk_state *)PyModule_GetState(sdk); }

void sdk_set_hooks(PyObject *sdk, const sdk_hooks *hooks, void *ctx) {
    sdk_state *st = module_state(sdk);
    st->hooks = hooks;
    st->hooks_ctx = hooks ? ctx : NULL;
}

PyObject *sdk_scope_new(PyObject *sdk, PyObject *context, void *slot) {
    return sdk_scope_create(module_state(sdk), context, slot, 1);
}

PyObject *sdk_scope_var(PyObject *sdk) { return module_state(sdk)->scope_var; }

void sdk_set_sync_scope(PyObject *sdk, PyObject *scope) {
    sdk_state *st = module_state(sdk);
    PyObject *old = st->sync_scope;
    Py_XINCREF(scope);
    st->sync_scope = scope;
    Py_XDECREF(old); /* last: a finalizer may run and look at the state */
}

/* ---- module ---- */

static PyObject *sdk_current_scope(PyObject *module, PyObject *unused) {
    (void)unused;
    sdk_state *st = module_state(module);
    if (st->scope_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "coglet._sdk is not initialized");
        return NULL;
    }
    PyObject *scope = PyObject_CallMethod(st->scope_var, "get", NULL);
    if (scope == NULL || scope != Py_None)
        return scope;
    Py_DECREF(scope);
    if (st->sync_scope != NULL) {
        Py_INCREF(st->sync_scope);
        return st->sync_scope;
    }
    return sdk_scope_create(st, NULL, NULL, 0);
}

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

/* The state keeps its own references; a failure leaves what was set for sdk_clear. */
static int sdk_exec(PyObject *module) {
    sdk_state *st = module_state(module);
    if ((st->scope_type = add_type(module, &sdk_scope_spec)) == NULL ||
        (st->recorder_type = add_type(module, &sdk_recorder_spec)) == NULL ||
        (st->slot_writer_type = add_type(module, &sdk_slot_writer_spec)) == NULL ||
        (st->tee_writer_type = add_type(module, &sdk_tee_writer_spec)) == NULL)
        return -1;
    if ((st->scope_var = make_scope_var()) == NULL)
        return -1;
    PyObject *all = Py_BuildValue("[sss]", "MetricRecorder", "Scope", "current_scope");
    int rc = all == NULL ? -1 : PyModule_AddObjectRef(module, "__all__", all);
    Py_XDECREF(all);
    return rc;
}

static int sdk_traverse(PyObject *module, visitproc visit, void *arg) {
    sdk_state *st = module_state(module);
    Py_VISIT(st->scope_type);
    Py_VISIT(st->recorder_type);
    Py_VISIT(st->slot_writer_type);
    Py_VISIT(st->tee_writer_type);
    Py_VISIT(st->scope_var);
    Py_VISIT(st->sync_scope);
    return 0;
}

static int sdk_clear(PyObject *module) {
    sdk_state *st = module_state(module);
    Py_CLEAR(st->scope_type);
    Py_CLEAR(st->recorder_type);
    Py_CLEAR(st->slot_writer_type);
    Py_CLEAR(st->tee_writer_type);
    Py_CLEAR(st->scope_var);
    Py_CLEAR(st->sync_scope);
    return 0;
}

static void sdk_free(void *module) { sdk_clear((PyObject *)module); }

static PyModuleDef_Slot sdk_slots[] = {
    {Py_mod_exec, sdk_exec},
    {0, NULL},
};

static struct PyModuleDef sdk_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "coglet._sdk",
    .m_doc = sdk_doc,
    .m_size = sizeof(sdk_state),
    .m_methods = sdk_functions,
    .m_slots = sdk_slots,
    .m_traverse = sdk_traverse,
    .m_clear = sdk_clear,
    .m_free = sdk_free,
};

/* The same two steps an import of a multi-phase module takes, with a spec of our own: the
 * submodule lives inside coglet._impl, no finder ever sees it. */
PyObject *sdk_module_new(void) {
    PyObject *machinery = PyImport_ImportModule("importlib.machinery");
    PyObject *spec = machinery ? PyObject_CallMethod(machinery, "ModuleSpec", "sO", "coglet._sdk", Py_None) : NULL;
    Py_XDECREF(machinery);
    if (!spec)
        return NULL;
    PyObject *module = PyModule_FromDefAndSpec(&sdk_def, spec);
    Py_DECREF(spec);
    if (module && PyModule_ExecDef(module, &sdk_def) < 0)
        Py_CLEAR(module);
    return module;
}
