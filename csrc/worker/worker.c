/* worker/worker.c: coglet.server._run_worker(), the worker process: reads `init` from the
 * control channel (fd 3), sets up the predictor, starts one thread per slot socket, runs the
 * control loop on the main thread until shutdown or EOF, then stops. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/ids.h"
#include "py/module.h"
#include "worker/worker.h"

#define CONTROL_FD 3
#define READ_CHUNK 65536

static void worker_free(worker *w) {
    for (int i = 0; i < w->num_slots; i++) {
        wslot *s = &w->slots[i];
        free(s->current_id);
        frame_decoder_free(&s->dec);
        buf_free(&s->batch);
        pthread_mutex_destroy(&s->write_lock);
    }
    free(w->slots);
    frame_decoder_free(&w->control_in);
    pthread_mutex_destroy(&w->control_lock);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->loop_cond);
    free(w->loop_chunk);
    Py_XDECREF(w->loop);
    Py_XDECREF(w->start_task);
    Py_XDECREF(w->arun_type);
    Py_XDECREF(w->sdk);
    Py_XDECREF(w->cancel_exc);
    Py_XDECREF(w->runtime);
    Py_XDECREF(w->pred);
    Py_XDECREF(w->method);
    Py_XDECREF(w->encode_other);
    Py_XDECREF(w->pred_id_var);
    Py_XDECREF(w->generator_type);
    Py_XDECREF(w->pathlike_type);
    Py_XDECREF(w->iobase_type);
    Py_XDECREF(w->no_args);
    free(w);
}

/* The end of _run_worker, and so of the process. A healthcheck thread still running holds a
 * pointer to w: then w stays, for the process exit to reclaim. */
static void worker_release(worker *w) {
    hooks_unregister(w);
    pthread_mutex_lock(&w->lock);
    int healthchecks = w->healthchecks;
    pthread_mutex_unlock(&w->lock);
    if (healthchecks == 0)
        worker_free(w);
}

static worker *worker_new(PyObject *module) {
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return (worker *)PyErr_NoMemory();
    w->control_fd = CONTROL_FD;
    pthread_mutex_init(&w->control_lock, NULL);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->loop_cond, NULL);
    frame_decoder_init(&w->control_in);
    w->sdk = coglet_sdk_module(module);
    w->cancel_exc = coglet_cancelation_exception(module);
    Py_XINCREF(w->sdk);
    Py_XINCREF(w->cancel_exc);
    if (!w->sdk || !w->cancel_exc) {
        worker_free(w);
        PyErr_SetString(PyExc_RuntimeError, "coglet._impl is not initialized");
        return NULL;
    }
    return w;
}

/* The first control frame, read through the decoder the control loop goes on with (whatever
 * follows it stays buffered there). Without the GIL. NULL with err set. */
static json_t *read_init(worker *w, char *err, size_t errlen) {
    char chunk[4096];
    json_t *msg = NULL;
    char why[256];
    int rc;
    while ((rc = frame_decoder_next(&w->control_in, &msg, why, sizeof why)) == 0) {
        ssize_t got = read(w->control_fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || frame_decoder_feed(&w->control_in, chunk, (size_t)got) != BUF_OK) {
            snprintf(err, errlen, "stdin closed before Init received");
            return NULL;
        }
    }
    if (rc < 0) {
        snprintf(err, errlen, "Failed to read Init: %s", why);
        return NULL;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (strcmp(type, "init")) {
        snprintf(err, errlen, "Expected Init message, got: %s", type);
        json_decref(msg);
        return NULL;
    }
    return msg;
}

/* Slots from init: socket i at first_fd + i. 0, or -1 with an exception. */
static int init_slots(worker *w, json_t *init) {
    json_int_t num_slots = json_integer_value(json_object_get(init, "num_slots"));
    json_t *fds = json_object_get(json_object_get(init, "transport_info"), "InheritedFds");
    json_int_t first_fd = json_integer_value(json_object_get(fds, "first_fd"));
    if (num_slots < 1 || num_slots > 100000 || first_fd < 3) {
        PyErr_SetString(PyExc_RuntimeError, "Failed to create handler: bad init message");
        return -1;
    }
    w->slots = calloc((size_t)num_slots, sizeof *w->slots);
    if (!w->slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < (int)num_slots; i++) {
        wslot *s = &w->slots[i];
        s->w = w;
        s->index = i;
        s->fd = (int)first_fd + i;
        pthread_mutex_init(&s->write_lock, NULL);
        buf_init(&s->batch, (size_t)1 << 20);
        frame_decoder_init(&s->dec);
        w->num_slots = i + 1; /* what worker_free cleans up */
        int rc = ids_uuid4(s->id);
        if (rc < 0) {
            errno = -rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

/* Stopping: a prediction still running would hold us forever (the parent is gone or asked
 * us to stop), so then the process leaves at once. Without the GIL; ts is this thread's. */
static void stop_or_exit(worker *w, PyThreadState *ts) {
    pthread_mutex_lock(&w->lock);
    w->quit = 1;
    int busy = 0;
    for (int i = 0; i < w->num_slots; i++)
        busy |= w->slots[i].running;
    pthread_mutex_unlock(&w->lock);
    if (!busy)
        return;
    PyEval_RestoreThread(ts);
    PyObject *out = PySys_GetObject("stdout");
    PyObject *r = out ? PyObject_CallMethod(out, "flush", NULL) : NULL;
    Py_XDECREF(r);
    PyErr_Clear();
    _exit(0);
}

/* Wakes the threads blocked in read() on the slot sockets: they see EOF. */
static void wake_slot_readers(worker *w) {
    for (int i = 0; i < w->num_slots; i++)
        shutdown(w->slots[i].fd, SHUT_RD);
}

/* Async: the event loop reads the slots and runs the predictions; this thread reads control. */
static void serve_async(worker *w) {
    if (async_attach(w) < 0)
        for (int i = 0; i < w->num_slots; i++)
            worker_poison_slot(w, &w->slots[i], "Slot socket error: cannot watch the slot socket", 1);
    PyThreadState *ts = PyEval_SaveThread();
    control_loop(w, &ts);
    stop_or_exit(w, ts);
    if (async_detach(w, 5.0) < 0) {
        PyEval_RestoreThread(ts);
        _exit(0); /* the loop is stuck: it still holds pointers to w */
    }
    PyEval_RestoreThread(ts);
}

static void *control_thread_main(void *arg) {
    worker *w = arg;
    PyGILState_STATE g = PyGILState_Ensure();
    PyThreadState *ts = PyEval_SaveThread();
    control_loop(w, &ts);
    stop_or_exit(w, ts);
    wake_slot_readers(w);
    PyEval_RestoreThread(ts);
    PyGILState_Release(g);
    return NULL;
}

/* Sync (one slot): predictions run on this thread, the one that ran setup(), where the model
 * runs fastest (a library's thread pool, PyTorch's OpenMP one for instance, belongs to the
 * thread that first used it); the control channel gets a thread of its own. Should that
 * thread not start, a slot thread runs them and this one reads control, as for async. */
static void serve_sync(worker *w) {
    pthread_t control;
    PyThreadState *ts;
    if (pthread_create(&control, NULL, control_thread_main, w) == 0) {
        ts = PyEval_SaveThread();
        slot_serve(&w->slots[0], &ts);
        pthread_join(control, NULL);
        PyEval_RestoreThread(ts);
        return;
    }
    wslot *s = &w->slots[0];
    s->thread_started = pthread_create(&s->thread, NULL, slot_thread_main, s) == 0;
    ts = PyEval_SaveThread();
    control_loop(w, &ts);
    stop_or_exit(w, ts);
    wake_slot_readers(w);
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    PyEval_RestoreThread(ts);
}

/* After setup: ready, then predictions until shutdown or EOF. */
static void serve_predictions(worker *w) {
    setup_send_ready(w);
    if (w->path->is_async)
        serve_async(w);
    else
        serve_sync(w);
}

PyObject *coglet_run_worker(PyObject *module) {
    worker *w = worker_new(module);
    if (!w)
        return NULL;
    coglet_set_worker_active(module, 1);
    if (setup_python(w) < 0)
        goto failed;
    char err[300];
    json_t *init;
    Py_BEGIN_ALLOW_THREADS init = read_init(w, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (!init) {
        PyErr_SetString(PyExc_RuntimeError, err);
        goto failed;
    }
    w->is_train = json_is_true(json_object_get(init, "is_train"));
    const char *ref = json_string_value(json_object_get(init, "predictor_ref"));
    char *ref_copy = ref ? strdup(ref) : NULL;
    int slots_rc = ref ? init_slots(w, init) : -1;
    json_decref(init);
    if (!ref_copy || slots_rc < 0) {
        free(ref_copy);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, ref ? "out of memory" : "Failed to create handler: bad init message");
        goto failed;
    }
    hooks_register(w);
    worker_log(w, "info", "File descriptor redirection complete", 1);
    worker_log(w, "info", "Connected to slot transport", 1);
    int ok = setup_predictor(w, ref_copy) == 0;
    free(ref_copy);
    PyErr_Clear();
    if (ok)
        serve_predictions(w);
    /* after a setup failure the parent was told; the worker exits */
    worker_release(w);
    Py_RETURN_NONE;

failed:
    worker_release(w);
    return NULL;
}
