/* py/module.c: the coglet._impl module: BuildInfo, Server, CancelationException and the
 * _sdk submodule (the surface the cog SDK imports). Multi-phase init; state in module state. */
#include <Python.h>

#include <stdio.h>

#include "common/build_info.h"
#include "py/module.h"
#include "py/sdk.h"

typedef struct {
    PyObject *cancel_exc;
    PyObject *build_info_type;
    PyObject *server_type;
    PyObject *sdk;     /* coglet._sdk */
    int worker_active; /* this process runs the worker */
} module_state;

static module_state *get_state(PyObject *module) { return (module_state *)PyModule_GetState(module); }

void coglet_set_worker_active(PyObject *module, int active) { get_state(module)->worker_active = active; }

PyObject *coglet_cancelation_exception(PyObject *module) { return get_state(module)->cancel_exc; }

PyObject *coglet_sdk_module(PyObject *module) { return get_state(module)->sdk; }

/* ---- BuildInfo ---- */

typedef struct {
    PyObject_HEAD
} build_info;

static PyObject *bi_version(PyObject *self, void *c) {
    (void)self, (void)c;
    return PyUnicode_FromString(coglet_build.version);
}
static PyObject *bi_git_sha(PyObject *self, void *c) {
    (void)self, (void)c;
    return PyUnicode_FromString(coglet_build.git_sha);
}
static PyObject *bi_dirty(PyObject *self, void *c) {
    (void)self, (void)c;
    return PyBool_FromLong(coglet_build.git_dirty);
}
static PyObject *bi_build_time(PyObject *self, void *c) {
    (void)self, (void)c;
    return PyUnicode_FromString(coglet_build.build_time);
}
static PyObject *bi_compiler(PyObject *self, void *c) {
    (void)self, (void)c;
    return PyUnicode_FromString(coglet_build.compiler);
}

static PyObject *bi_repr(PyObject *self) {
    (void)self;
    return PyUnicode_FromFormat("BuildInfo(version='%s', git_sha='%s', dirty=%s, build_time='%s', rustc_version='%s')",
                                coglet_build.version, coglet_build.git_sha, coglet_build.git_dirty ? "True" : "False",
                                coglet_build.build_time, coglet_build.compiler);
}

static void plain_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    freefunc f = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    f(self);
    Py_DECREF(tp);
}

static PyGetSetDef bi_getset[] = {
    {"version", bi_version, NULL, "coglet version (PEP 440)", NULL},
    {"git_sha", bi_git_sha, NULL, "short git SHA at build time", NULL},
    {"dirty", bi_dirty, NULL, "working tree was dirty at build time", NULL},
    {"build_time", bi_build_time, NULL, "UTC build time", NULL},
    {"rustc_version", bi_compiler, NULL, "compiler of this build (a C compiler here)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot bi_slots[] = {
    {Py_tp_getset, bi_getset},
    {Py_tp_repr, bi_repr},
    {Py_tp_dealloc, plain_dealloc},
    {Py_tp_doc, "Build information of this coglet (frozen)."},
    {0, NULL},
};

static PyType_Spec bi_spec = {
    .name = "coglet.BuildInfo",
    .basicsize = sizeof(build_info),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = bi_slots,
};

/* ---- Server ---- */

typedef struct {
    PyObject_HEAD
} server_obj;

static PyObject *server_module(PyObject *self) { return PyType_GetModule(Py_TYPE(self)); }

static PyObject *server_serve(PyObject *self, PyObject *args, PyObject *kwargs) {
    PyObject *module = server_module(self);
    if (!module)
        return NULL;
    return coglet_serve(module, args, kwargs);
}

static PyObject *server_run_worker(PyObject *self, PyObject *noargs) {
    (void)noargs;
    PyObject *module = server_module(self);
    if (!module)
        return NULL;
    return coglet_run_worker(module);
}

/* Server cannot be subclassed, so its module is PyType_GetModule(Py_TYPE(self)); see
 * py/sdk_internal.h for why not PyType_GetModuleByDef. */
static PyObject *server_active(PyObject *self, void *c) {
    (void)c;
    module_state *st = PyType_GetModuleState(Py_TYPE(self));
    return st ? PyBool_FromLong(st->worker_active) : NULL;
}

static PyObject *server_repr(PyObject *self) {
    (void)self;
    return PyUnicode_FromString("coglet.server");
}

static PyMethodDef server_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))server_serve, METH_VARARGS | METH_KEYWORDS,
     "serve(predictor_ref=None, host='0.0.0.0', port=5000, await_explicit_shutdown=False, is_train=False, "
     "output_temp_dir_base='/tmp/coglet/output', upload_url=None)\n--\n\n"
     "Run the prediction server until shutdown (the GIL is released meanwhile)."},
    {"_run_worker", server_run_worker, METH_NOARGS, "Worker entry point (run by the server in a subprocess)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef server_getset[] = {
    {"active", server_active, NULL, "True inside the worker process.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot server_slots[] = {
    {Py_tp_methods, server_methods},
    {Py_tp_getset, server_getset},
    {Py_tp_repr, server_repr},
    {Py_tp_dealloc, plain_dealloc},
    {Py_tp_doc, "The coglet server (a frozen singleton)."},
    {0, NULL},
};

static PyType_Spec server_spec = {
    .name = "coglet.Server",
    .basicsize = sizeof(server_obj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = server_slots,
};

/* ---- module ---- */

static PyObject *new_instance(PyObject *type) {
    allocfunc alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)type, Py_tp_alloc);
    return alloc((PyTypeObject *)type, 0);
}

static int add_string_list(PyObject *m, const char *name, const char *const *items) {
    PyObject *list = PyList_New(0);
    if (!list)
        return -1;
    for (; *items; items++) {
        PyObject *s = PyUnicode_FromString(*items);
        if (!s || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return -1;
        }
        Py_DECREF(s);
    }
    return PyModule_AddObject(m, name, list) < 0 ? (Py_DECREF(list), -1) : 0;
}

static int module_exec(PyObject *m) {
    module_state *st = get_state(m);
    st->cancel_exc = PyErr_NewExceptionWithDoc(
        "coglet.CancelationException",
        "Raised when a running prediction or training is cancelled.\n\n"
        "A BaseException, not an Exception, so `except Exception:` does not swallow it.",
        PyExc_BaseException, NULL);
    if (!st->cancel_exc)
        return -1;
    Py_INCREF(st->cancel_exc);
    if (PyModule_AddObject(m, "CancelationException", st->cancel_exc) < 0) {
        Py_DECREF(st->cancel_exc);
        return -1;
    }
    st->build_info_type = PyType_FromModuleAndSpec(m, &bi_spec, NULL);
    st->server_type = PyType_FromModuleAndSpec(m, &server_spec, NULL);
    if (!st->build_info_type || !st->server_type)
        return -1;
    PyObject *bi = new_instance(st->build_info_type);
    if (!bi || PyModule_AddObject(m, "__build__", bi) < 0) {
        Py_XDECREF(bi);
        return -1;
    }
    PyObject *srv = new_instance(st->server_type);
    if (!srv || PyModule_AddObject(m, "server", srv) < 0) {
        Py_XDECREF(srv);
        return -1;
    }
    if (PyModule_AddStringConstant(m, "__version__", coglet_build.version) < 0)
        return -1;
    st->sdk = sdk_module_new();
    if (!st->sdk || PyModule_AddObjectRef(m, "_sdk", st->sdk) < 0)
        return -1;
    static const char *const all[] = {"__version__", "__build__", "server", NULL};
    return add_string_list(m, "__all__", all);
}

static int module_traverse(PyObject *m, visitproc visit, void *arg) {
    module_state *st = get_state(m);
    Py_VISIT(st->cancel_exc);
    Py_VISIT(st->build_info_type);
    Py_VISIT(st->server_type);
    Py_VISIT(st->sdk);
    return 0;
}

static int module_clear(PyObject *m) {
    module_state *st = get_state(m);
    Py_CLEAR(st->cancel_exc);
    Py_CLEAR(st->build_info_type);
    Py_CLEAR(st->server_type);
    Py_CLEAR(st->sdk);
    return 0;
}

static void module_free(void *m) { module_clear((PyObject *)m); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "coglet._impl",
    .m_doc = "coglet's native core: HTTP server, orchestrator and worker in C.",
    .m_size = sizeof(module_state),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__impl(void) { return PyModuleDef_Init(&module_def); }
