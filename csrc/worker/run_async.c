/* worker/run_async.c: the async paths: the coroutine (or async generator) the method returns
 * runs on the shared event loop (_runtime.Predictor.submit / submit_stream) while the slot
 * thread waits for its future; an async generator's items come through a queue as they are
 * yielded. Cancelled through the future. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "py/sdk.h"
#include "worker/worker.h"

/* The coroutine or async generator; NULL with rc failed. */
static PyObject *call_method(run_ctx *rc, PyObject *kwargs) {
    PyObject *coro = PyObject_Call(rc->w->method, rc->w->no_args, kwargs);
    if (!coro) {
        char prefix[96];
        snprintf(prefix, sizeof prefix, "Prediction failed: Failed to call %s: ", rc->w->method_name);
        run_fail_pyerr(rc, prefix);
    }
    return coro;
}

/* Makes the future reachable by a cancel, and applies one that came first. */
static void watch_future(run_ctx *rc, PyObject *fut) {
    if (slot_set_future(rc->w, rc->s, fut)) {
        PyObject *r = PyObject_CallMethod(fut, "cancel", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
    }
}

/* The future's result (new), or NULL with rc cancelled or failed. */
static PyObject *await_future(run_ctx *rc, PyObject *fut) {
    worker *w = rc->w;
    PyObject *result = PyObject_CallMethod(fut, "result", NULL);
    slot_set_future(w, rc->s, NULL);
    if (result)
        return result;
    if (rc->failed) {
        PyErr_Clear(); /* we stopped it ourselves: a bad item already failed it */
        return NULL;
    }
    char *e = worker_format_pyerr();
    /* cancelled when we cancelled it, or when it ended by a CancelledError; the original also
     * treats any text containing "cancelled" as a cancel, so a ValueError("order cancelled")
     * read as canceled there */
    if (slot_is_cancelled(w, rc->s) || (e && !strncmp(e, "CancelledError", 14))) {
        rc->cancelled = 1;
    } else {
        buf out;
        buf_init(&out, (size_t)1 << 20);
        buf_printf(&out, "%s%s",
                   w->is_train ? "Prediction failed: Async training failed: "
                               : "Prediction failed: Async prediction failed: ",
                   e ? e : "");
        free(rc->error);
        rc->error = buf_steal(&out);
        rc->failed = 1;
    }
    free(e);
    return NULL;
}

static void call_async(run_ctx *rc, PyObject *kwargs) {
    worker *w = rc->w;
    PyObject *coro = call_method(rc, kwargs);
    if (!coro)
        return;
    PyObject *fut = PyObject_CallMethod(w->pred, "submit", "OOsOO", coro, w->pred_id_var, rc->id,
                                        sdk_scope_var(w->sdk), rc->scope);
    Py_DECREF(coro);
    if (!fut) {
        run_fail_pyerr(rc, "Prediction failed: ");
        return;
    }
    watch_future(rc, fut);
    PyObject *result = await_future(rc, fut);
    Py_DECREF(fut);
    if (!result)
        return;
    int generator = PyObject_IsInstance(result, w->generator_type);
    if (generator == 1) {
        run_stream_generator(rc, result);
        Py_DECREF(result);
        return;
    }
    if (generator < 0)
        PyErr_Clear();
    rc->result = result;
}

/* Items as they are yielded, until the sentinel (the queue itself). After a bad item the
 * generator is cancelled and the rest drained unsent. */
static void drain_queue(run_ctx *rc, PyObject *fut, PyObject *queue) {
    for (;;) {
        PyObject *item = PyObject_CallMethod(queue, "get", NULL);
        if (!item || item == queue) {
            Py_XDECREF(item);
            PyErr_Clear();
            return;
        }
        int bad = rc->failed ? 0 : outputs_send(rc, item, 0);
        Py_DECREF(item);
        if (bad) {
            PyObject *r = PyObject_CallMethod(fut, "cancel", NULL);
            Py_XDECREF(r);
            PyErr_Clear();
        }
    }
}

static void call_async_generator(run_ctx *rc, PyObject *kwargs) {
    worker *w = rc->w;
    PyObject *agen = call_method(rc, kwargs);
    if (!agen)
        return;
    PyObject *pair = PyObject_CallMethod(w->pred, "submit_stream", "OOsOO", agen, w->pred_id_var, rc->id,
                                         sdk_scope_var(w->sdk), rc->scope);
    Py_DECREF(agen);
    PyObject *fut = NULL, *queue = NULL;
    if (!pair || !PyArg_ParseTuple(pair, "OO", &fut, &queue)) {
        Py_XDECREF(pair);
        run_fail_pyerr(rc, "Prediction failed: ");
        return;
    }
    Py_INCREF(fut);
    Py_INCREF(queue);
    Py_DECREF(pair);
    watch_future(rc, fut);
    rc->stream = 1;
    drain_queue(rc, fut, queue);
    Py_DECREF(queue);
    PyObject *result = await_future(rc, fut);
    Py_DECREF(fut);
    Py_XDECREF(result); /* its items went out already */
}

const run_path run_path_async = {
    .name = "async",
    .is_async = 1,
    .call = call_async,
};

const run_path run_path_async_generator = {
    .name = "async_generator",
    .is_async = 1,
    .call = call_async_generator,
};
