/* worker/run_async.c: async predictions on the event loop that runs them. The loop reads the
 * slot sockets itself (loop.add_reader), so a predict frame becomes a Task on the loop thread
 * with no hand-off between threads, and the Task writes the terminal message when the
 * coroutine ends. Each prediction is an `_AsyncRun` object, driven by a small coroutine in
 * coglet/_runtime.py (run_async, run_async_generator) that calls back into it. Cancelled
 * through its Task (loop.call_soon_threadsafe(task.cancel) from the control thread). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "py/sdk.h"
#include "worker/worker.h"

#define READ_CHUNK 65536

/* One async prediction, from its predict frame to its terminal message. Touched only with the
 * GIL, by one thread at a time (the loop thread; an executor thread while the Task waits). */
typedef struct arun {
    PyObject_HEAD
    run_ctx rc;
    run_entered in;
    json_t *job;     /* the predict frame: rc borrows id and output_dir from it */
    PyObject *task;  /* its Task until it ends (a cycle through the coroutine, broken then) */
    int ended;
} arun;

/* ---- the prediction ---- */

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

/* Leaves, marks the slot idle, sends the terminal message; once. */
static void arun_end(arun *r) {
    if (r->ended)
        return;
    r->ended = 1;
    slot_set_future(r->rc.w, r->rc.s, NULL);
    run_finish(&r->rc, &r->in);
    Py_CLEAR(r->task);
}

/* The coroutine ended with exc: cancelled when we cancelled it, or when it ended by a
 * CancelledError (the original also treats any text containing "cancelled" as a cancel, so a
 * ValueError("order cancelled") read as canceled there); else failed. */
static void arun_error(arun *r, PyObject *exc) {
    run_ctx *rc = &r->rc;
    if (rc->failed || rc->cancelled)
        return; /* we stopped it ourselves: a bad item already failed it */
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), NULL);
    char *e = worker_format_pyerr(&rc->exc_message, &rc->exc_traceback);
    if (slot_is_cancelled(rc->w, rc->s) || (e && !strncmp(e, "CancelledError", 14))) {
        rc->cancelled = 1;
    } else {
        buf out;
        buf_init(&out, (size_t)1 << 20);
        buf_printf(&out, "%s%s",
                   rc->w->is_train ? "Prediction failed: Async training failed: "
                                   : "Prediction failed: Async prediction failed: ",
                   e ? e : "");
        free(rc->error);
        rc->error = buf_steal(&out);
        rc->failed = 1;
    }
    free(e);
}

/* run.finish(result, exc): the outcome. Delivers the result and ends the prediction, except
 * for a sync generator, which is returned: the runner iterates it on a thread (run.stream)
 * and then calls run.end(). */
static PyObject *arun_finish(arun *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || r->ended)
        Py_RETURN_NONE;
    run_ctx *rc = &r->rc;
    PyObject *result = args[0], *exc = args[1];
    slot_set_future(rc->w, rc->s, NULL); /* past this point a cancel only marks it */
    if (exc != Py_None) {
        arun_error(r, exc);
    } else if (result != Py_None && !rc->cancelled && !rc->failed) {
        int generator = PyObject_IsInstance(result, rc->w->generator_type);
        if (generator == 1)
            return Py_NewRef(result);
        if (generator < 0)
            PyErr_Clear();
        rc->result = Py_NewRef(result);
        run_deliver(rc);
    }
    arun_end(r);
    Py_RETURN_NONE;
}

static PyObject *arun_end_method(arun *r, PyObject *unused) {
    (void)unused;
    arun_end(r);
    Py_RETURN_NONE;
}

/* run.watch(): the Task is running: a cancel reaches it from now on. True when the
 * prediction was cancelled before (the runner then ends it without running it). */
static PyObject *arun_watch(arun *r, PyObject *unused) {
    (void)unused;
    if (slot_set_future(r->rc.w, r->rc.s, r->task)) {
        r->rc.cancelled = 1;
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

/* run.emit(item): one item of an async generator, sent as it is yielded. After a bad item
 * the generator is cancelled and the rest drained unsent. */
static PyObject *arun_emit(arun *r, PyObject *item) {
    run_ctx *rc = &r->rc;
    if (!rc->failed && outputs_send(rc, item, 0) < 0 && r->task) {
        PyObject *res = PyObject_CallMethod(r->task, "cancel", NULL);
        Py_XDECREF(res);
    }
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* run.prepare_and_call(), on a thread: File/Path/Secret inputs coerced (downloads may take a
 * while), then the method called. The coroutine, or None with the run failed or cancelled. */
static PyObject *arun_prepare_and_call(arun *r, PyObject *unused) {
    (void)unused;
    run_ctx *rc = &r->rc;
    if (r->ended || run_prepare(rc, &r->in) < 0)
        Py_RETURN_NONE;
    PyObject *coro = call_method(rc, r->in.kwargs);
    if (!coro)
        Py_RETURN_NONE;
    if (rc->w->path->is_generator)
        rc->stream = 1;
    return coro;
}

/* run.stream(generator), on a thread: a sync generator returned by an async method is
 * iterated off the loop, as any other blocking work. */
static PyObject *arun_stream(arun *r, PyObject *generator) {
    if (!r->ended)
        run_stream_generator(&r->rc, generator);
    PyErr_Clear();
    Py_RETURN_NONE;
}

static void arun_dealloc(arun *r) {
    /* ended normally; if not, its Task was destroyed while pending and the slot stays busy,
     * as a future nobody completes would keep it */
    Py_XDECREF(r->task);
    Py_XDECREF(r->rc.scope);
    Py_XDECREF(r->rc.result);
    Py_XDECREF(r->in.context);
    Py_XDECREF(r->in.kwargs);
    Py_XDECREF(r->in.temps);
    free(r->rc.final_text);
    free(r->rc.error);
    json_decref(r->job);
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_Free(r);
    Py_DECREF(tp);
}

static PyMethodDef arun_methods[] = {
    {"finish", (PyCFunction)(void (*)(void))arun_finish, METH_FASTCALL, NULL},
    {"end", (PyCFunction)arun_end_method, METH_NOARGS, NULL},
    {"watch", (PyCFunction)arun_watch, METH_NOARGS, NULL},
    {"emit", (PyCFunction)arun_emit, METH_O, NULL},
    {"prepare_and_call", (PyCFunction)arun_prepare_and_call, METH_NOARGS, NULL},
    {"stream", (PyCFunction)arun_stream, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot arun_slots[] = {
    {Py_tp_dealloc, (void *)arun_dealloc},
    {Py_tp_methods, arun_methods},
    {0, NULL},
};

static PyType_Spec arun_spec = {
    .name = "coglet._AsyncRun",
    .basicsize = sizeof(arun),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = arun_slots,
};

/* The Task that drives r (_runtime.task_starter: the runner in a new context that holds the
 * prediction's id and scope, which log routing and current_scope() read). New, or NULL. */
static PyObject *new_task(worker *w, arun *r, PyObject *coro) {
    PyObject *id = PyUnicode_FromString(r->rc.id);
    PyObject *task = id ? PyObject_CallFunctionObjArgs(w->start_task, (PyObject *)r, coro, id, r->rc.scope, NULL)
                        : NULL;
    Py_XDECREF(id);
    return task;
}

/* A predict frame (taken) on the loop thread: the prediction entered and its Task created;
 * or ended at once (cancelled first, bad input, the method cannot be called). */
static void start_prediction(worker *w, wslot *s, json_t *job) {
    arun *r = PyObject_New(arun, (PyTypeObject *)w->arun_type);
    if (!r) {
        PyErr_Clear();
        run_ctx rc;
        run_entered in = {0};
        run_init(&rc, w, s, job);
        run_enter(&rc, job, &in);
        run_fail(&rc, "Prediction failed: out of memory");
        run_finish(&rc, &in);
        json_decref(job);
        return;
    }
    memset((char *)r + sizeof(PyObject), 0, sizeof *r - sizeof(PyObject));
    r->job = job;
    run_init(&r->rc, w, s, job);
    if (run_enter(&r->rc, job, &r->in) == 0) {
        /* with File/Path inputs the runner prepares them on a thread first, then calls */
        PyObject *coro = w->has_coercions ? Py_NewRef(Py_None) : call_method(&r->rc, r->in.kwargs);
        if (coro) {
            if (coro != Py_None && w->path->is_generator)
                r->rc.stream = 1;
            r->task = new_task(w, r, coro);
            Py_DECREF(coro);
            if (!r->task)
                run_fail_pyerr(&r->rc, "Prediction failed: ");
        }
    }
    if (!r->task)
        arun_end(r);
    Py_DECREF(r); /* the Task's coroutine holds it from here */
}

/* ---- the slot sockets, read by the loop ---- */

/* Under the GIL, on the loop thread. */
static void drop_reader(worker *w, wslot *s) {
    if (!s->reader)
        return;
    PyObject *r = PyObject_CallMethod(w->loop, "remove_reader", "i", s->fd);
    Py_XDECREF(r);
    PyErr_Clear();
    Py_CLEAR(s->reader);
    w->loop_readers--;
}

/* The loop's reader callback for one slot socket: whatever arrived, predictions started. EOF
 * (the parent closed the socket, or the worker stops) ends the reading. */
static PyObject *slot_readable(PyObject *cap, PyObject *unused) {
    (void)unused;
    wslot *s = PyCapsule_GetPointer(cap, NULL);
    worker *w = s->w;
    if (w->quit) {
        drop_reader(w, s);
        Py_RETURN_NONE;
    }
    ssize_t got = read(s->fd, w->loop_chunk, READ_CHUNK);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        Py_RETURN_NONE;
    if (got <= 0 || frame_decoder_feed(&s->dec, w->loop_chunk, (size_t)got) != BUF_OK) {
        drop_reader(w, s);
        Py_RETURN_NONE;
    }
    json_t *job;
    char err[256];
    int rc;
    while ((rc = frame_decoder_next(&s->dec, &job, err, sizeof err)) == 1) {
        if (!strcmp(json_string_value(json_object_get(job, "type")), "predict"))
            start_prediction(w, s, job);
        else
            json_decref(job);
    }
    if (rc < 0) {
        char text[300];
        snprintf(text, sizeof text, "Slot socket error: %s", err);
        worker_poison_slot(w, s, text, 1);
        drop_reader(w, s);
    }
    PyErr_Clear();
    Py_RETURN_NONE;
}

static PyMethodDef slot_readable_def = {"_slot_readable", slot_readable, METH_NOARGS, NULL};

/* On the loop thread: one reader per slot socket. */
static PyObject *attach_readers(PyObject *cap, PyObject *unused) {
    (void)unused;
    worker *w = PyCapsule_GetPointer(cap, NULL);
    for (int i = 0; i < w->num_slots && !w->quit; i++) {
        wslot *s = &w->slots[i];
        PyObject *scap = PyCapsule_New(s, NULL, NULL);
        s->reader = scap ? PyCFunction_New(&slot_readable_def, scap) : NULL;
        Py_XDECREF(scap);
        PyObject *r = s->reader ? PyObject_CallMethod(w->loop, "add_reader", "iO", s->fd, s->reader) : NULL;
        if (!r) {
            Py_CLEAR(s->reader);
            worker_poison_slot(w, s, "Slot socket error: cannot watch the slot socket", 1);
        } else {
            w->loop_readers++;
        }
        Py_XDECREF(r);
    }
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* On the loop thread: every reader dropped; the main thread waits for this. */
static PyObject *detach_readers(PyObject *cap, PyObject *unused) {
    (void)unused;
    worker *w = PyCapsule_GetPointer(cap, NULL);
    for (int i = 0; i < w->num_slots; i++)
        drop_reader(w, &w->slots[i]);
    pthread_mutex_lock(&w->lock);
    w->loop_detached = 1;
    pthread_cond_broadcast(&w->loop_cond);
    pthread_mutex_unlock(&w->lock);
    Py_RETURN_NONE;
}

static PyMethodDef attach_def = {"_attach_readers", attach_readers, METH_NOARGS, NULL};
static PyMethodDef detach_def = {"_detach_readers", detach_readers, METH_NOARGS, NULL};

/* loop.call_soon_threadsafe(def(w)); with the GIL. 0 or -1. */
static int call_on_loop(worker *w, PyMethodDef *def) {
    PyObject *cap = PyCapsule_New(w, NULL, NULL);
    PyObject *fn = cap ? PyCFunction_New(def, cap) : NULL;
    PyObject *r = fn ? PyObject_CallMethod(w->loop, "call_soon_threadsafe", "O", fn) : NULL;
    int rc = r ? 0 : -1;
    Py_XDECREF(r);
    Py_XDECREF(fn);
    Py_XDECREF(cap);
    PyErr_Clear();
    return rc;
}

int async_init(worker *w) {
    w->arun_type = PyType_FromSpec(&arun_spec);
    w->loop = w->arun_type ? PyObject_CallMethod(w->pred, "event_loop", NULL) : NULL;
    PyObject *runner = w->loop ? PyObject_GetAttrString(w->runtime, w->path->runner) : NULL;
    w->start_task = runner ? PyObject_CallMethod(w->runtime, "task_starter", "OOOO", w->loop, runner, w->pred_id_var,
                                                 sdk_scope_var(w->sdk))
                           : NULL;
    Py_XDECREF(runner);
    w->loop_chunk = w->start_task ? malloc(READ_CHUNK) : NULL;
    if (w->start_task && !w->loop_chunk)
        PyErr_NoMemory();
    return w->loop_chunk ? 0 : -1;
}

int async_attach(worker *w) { return call_on_loop(w, &attach_def); }

int async_detach(worker *w, double seconds) {
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = call_on_loop(w, &detach_def);
    PyGILState_Release(g);
    if (rc < 0)
        return -1;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)seconds;
    pthread_mutex_lock(&w->lock);
    while (!w->loop_detached && rc == 0)
        rc = pthread_cond_timedwait(&w->loop_cond, &w->lock, &until) ? -1 : 0;
    int detached = w->loop_detached;
    pthread_mutex_unlock(&w->lock);
    return detached ? 0 : -1;
}

const run_path run_path_async = {
    .name = "async",
    .is_async = 1,
    .runner = "run_async",
};

const run_path run_path_async_generator = {
    .name = "async_generator",
    .is_async = 1,
    .runner = "run_async_generator",
    .is_generator = 1,
};
