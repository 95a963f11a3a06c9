/* py/sdk.h: coglet._sdk: Scope, MetricRecorder, _SlotLogWriter, _TeeWriter, current_scope. */
#ifndef COGLET_SDK_H
#define COGLET_SDK_H
#include <Python.h>
#include <jansson.h>
/* Creates the types, the ContextVar, and adds Scope, MetricRecorder, _SlotLogWriter, _TeeWriter,
 * current_scope, __doc__ ("Internal SDK runtime integration for coglet." ...) and
 * __all__ = ["MetricRecorder", "Scope", "current_scope"] to `module`. 0 or -1 with an exception. */
int sdk_init(PyObject *module);
/* A new active scope for one prediction: context is a dict (borrowed; the scope keeps a ref and
 * returns that same dict from .context); slot is an opaque pointer passed to worker_send_metric. */
PyObject *sdk_scope_new(PyObject *context, void *slot);
/* Deactivates the scope's recorder (later calls are silent no-ops). */
void sdk_scope_deactivate(PyObject *scope);
/* The ContextVar `_coglet_metric_scope` (borrowed). */
PyObject *sdk_scope_var(void);
/* Process-wide "current sync scope" (NULL clears). Holds a reference. */
void sdk_set_sync_scope(PyObject *scope);
/* _SlotLogWriter wrapping `original` (a stream), source "stdout" or "stderr". New ref. */
PyObject *sdk_slot_writer_new(PyObject *original, const char *source);
/* Emits the writer's buffered partial line, if any (used when a prediction ends). 0 or -1. */
int sdk_slot_writer_flush_pending(PyObject *writer);
int sdk_is_slot_writer(PyObject *obj);

/* Provided by the worker (csrc/py/worker.c), called with the GIL held: */
/* Sends one metric message for the prediction on `slot`. value is stolen. mode is "replace",
 * "increment" or "append". Returns 0, or -1 and fills err (then raise IOError("Failed to send metric: {err}")
 * or "Failed to send metric delete: {err}" for delete). */
int worker_send_metric(void *slot, const char *name, json_t *value, const char *mode, char *err, size_t errlen);
/* Routes one emission of complete lines (or an emit_data call) from a _SlotLogWriter: source "stdout"/"stderr". */
void worker_route_log(const char *source, const char *data, size_t len);
#endif
