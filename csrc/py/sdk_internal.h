/* py/sdk_internal.h: what the files of coglet._sdk share: the module state and how a type's
 * methods reach it, the type specs, and small helpers. Not for use outside csrc/py/sdk*.c. */
#ifndef COGLET_SDK_INTERNAL_H
#define COGLET_SDK_INTERNAL_H

#include "py/sdk.h"

#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif

typedef struct sdk_state {
    PyTypeObject *scope_type;
    PyTypeObject *recorder_type;
    PyTypeObject *slot_writer_type;
    PyTypeObject *tee_writer_type;
    PyObject *scope_var;    /* ContextVar _coglet_metric_scope */
    PyObject *sync_scope;   /* the running sync prediction's Scope, or NULL */
    const sdk_hooks *hooks; /* registered by the worker; NULL elsewhere */
    void *hooks_ctx;
} sdk_state;

/* The state of the module that created self's type.
 *
 * PyType_GetModuleByDef, which also finds it from a subclass, is in the limited API only
 * from 3.13; we build for 3.10 (abi3). None of our types can be subclassed (no
 * Py_TPFLAGS_BASETYPE), so Py_TYPE(self) is always the type PyType_FromModuleAndSpec made,
 * and PyType_GetModuleState (stable ABI since 3.10) gives its module's state directly. */
static inline sdk_state *sdk_state_of(PyObject *self) { return (sdk_state *)PyType_GetModuleState(Py_TYPE(self)); }

extern PyType_Spec sdk_scope_spec, sdk_recorder_spec, sdk_slot_writer_spec, sdk_tee_writer_spec;

/* A new inactive (no-op) scope, or an active one for `slot`. */
PyObject *sdk_scope_create(sdk_state *st, PyObject *context, void *slot, int active);

/* Shared by the types. */
PyObject *sdk_alloc_instance(PyTypeObject *type);
void sdk_free_instance(PyObject *self);
/* TypeError "{fmt with %U = type name of obj}"; always NULL. */
PyObject *sdk_type_error(const char *fmt, PyObject *obj);
PyObject *sdk_return_self(PyObject *self, PyObject *unused);
PyObject *sdk_return_false(PyObject *self, PyObject *args);
PyObject *sdk_return_none_getter(PyObject *self, void *closure);

#endif
