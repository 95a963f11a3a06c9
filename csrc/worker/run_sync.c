/* worker/run_sync.c: the sync path: the method called on the thread that read the frame (the
 * one that ran setup()), with the sync slot and scope set process-wide (log routing and
 * current_scope() need no ContextVar), a returned generator iterated there too. Cancelled
 * by an exception injected into the thread. */
#include "py/sdk.h"
#include "worker/worker.h"

static void call_sync(run_ctx *rc, PyObject *kwargs) {
    worker *w = rc->w;
    sdk_set_sync_scope(w->sdk, rc->scope);
    w->sync_slot = rc->s;
    PyObject *result = PyObject_Call(w->method, w->no_args, kwargs);
    if (!result) {
        if (slot_is_cancelled(w, rc->s)) {
            PyErr_Clear();
            rc->cancelled = 1;
        } else {
            run_fail_pyerr(rc, w->is_train ? "Prediction failed: Training failed: " : "Prediction failed: ");
        }
    } else {
        int generator = PyObject_IsInstance(result, w->generator_type);
        if (generator == 1) {
            run_stream_generator(rc, result);
            Py_DECREF(result);
        } else {
            if (generator < 0)
                PyErr_Clear();
            rc->result = result;
        }
    }
    w->sync_slot = NULL;
    sdk_set_sync_scope(w->sdk, NULL);
}

const run_path run_path_sync = {
    .name = "sync",
    .is_async = 0,
    .call = call_sync,
};
