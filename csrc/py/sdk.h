/* py/sdk.h: coglet._sdk (Scope, MetricRecorder, current_scope, _SlotLogWriter, _TeeWriter) and
 * what the worker calls in it. The sdk knows nothing of the worker: the worker registers an
 * sdk_hooks table, through which metrics and log lines leave. Call everything with the GIL. */
#ifndef COGLET_SDK_H
#define COGLET_SDK_H

#include <Python.h>
#include <jansson.h>
#include <stddef.h>

/* What the sdk needs from whoever runs predictions (the worker); `ctx` is what was registered,
 * `slot` the pointer given to sdk_scope_new. */
typedef struct sdk_hooks {
    /* Sends one metric; value is taken, mode is "replace", "increment" or "append". 0, or -1
     * with err filled: record() then raises IOError("Failed to send metric: {err}"). */
    int (*send_metric)(void *ctx, void *slot, const char *name, json_t *value, const char *mode, char *err,
                       size_t errlen);
    /* One emission of a _SlotLogWriter: complete lines, or what emit_data() was given. source
     * is "stdout" or "stderr". May release the GIL. */
    void (*route_log)(void *ctx, const char *source, const char *data, size_t len);
} sdk_hooks;

/* A new coglet._sdk module (multi-phase init from its own PyModuleDef, state in module state). */
PyObject *sdk_module_new(void);
/* Registers the hooks (NULL unregisters: metrics then fail, log lines are dropped). */
void sdk_set_hooks(PyObject *sdk, const sdk_hooks *hooks, void *ctx);

/* A new active scope for one prediction: context is a dict (the scope keeps a reference and
 * returns that same dict from .context); slot goes back to send_metric. */
PyObject *sdk_scope_new(PyObject *sdk, PyObject *context, void *slot);
/* Deactivates the scope's recorder (later calls are silent no-ops). */
void sdk_scope_deactivate(PyObject *sdk, PyObject *scope);
/* The ContextVar `_coglet_metric_scope` (borrowed). */
PyObject *sdk_scope_var(PyObject *sdk);
/* The process-wide scope of the running sync prediction (NULL clears). Holds a reference. */
void sdk_set_sync_scope(PyObject *sdk, PyObject *scope);

/* A _SlotLogWriter wrapping `original` (a stream); source "stdout" or "stderr". New ref. */
PyObject *sdk_slot_writer_new(PyObject *sdk, PyObject *original, const char *source);
/* Emits the writer's buffered partial line, if any (when a prediction ends). 0 or -1. */
int sdk_slot_writer_flush_pending(PyObject *sdk, PyObject *writer);
int sdk_is_slot_writer(PyObject *sdk, PyObject *obj);

#endif
