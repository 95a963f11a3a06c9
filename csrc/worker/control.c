/* worker/control.c: the control channel on the main thread: cancels (by slot and dispatch
 * number), healthchecks (each on a thread of its own) and shutdown. The GIL is released
 * except where a cancel or a failure needs it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/worker.h"

#define READ_CHUNK 65536

static wslot *slot_by_id(worker *w, const char *id) {
    for (int i = 0; id && i < w->num_slots; i++)
        if (!strcmp(w->slots[i].id, id))
            return &w->slots[i];
    return NULL;
}

/* Frames on the control channel can overtake the slot's predict frame: a cancel for a
 * dispatch not seen yet is kept and applied when it starts; one for a dispatch that already
 * ended is dropped, so it can never hit the next prediction. */
static void handle_cancel(worker *w, json_t *msg, PyThreadState **ts) {
    unsigned long long seq = (unsigned long long)json_integer_value(json_object_get(msg, "seq"));
    pthread_mutex_lock(&w->lock);
    wslot *s = slot_by_id(w, json_string_value(json_object_get(msg, "slot")));
    if (!s || !s->running || (seq && s->current_seq != seq)) {
        if (s && seq > s->finished_seq)
            s->cancel_seq = seq; /* not started yet */
        pthread_mutex_unlock(&w->lock);
        return;
    }
    s->cancelled = 1;
    unsigned long ident = s->thread_ident;
    pthread_mutex_unlock(&w->lock);

    PyEval_RestoreThread(*ts);
    pthread_mutex_lock(&w->lock); /* the future is set and cleared with the GIL held */
    PyObject *fut = s->future;
    Py_XINCREF(fut);
    int still = s->running && s->cancelled;
    pthread_mutex_unlock(&w->lock);
    if (fut) {
        /* a Task belongs to the loop's thread: cancelled there */
        PyObject *cancel = PyObject_GetAttrString(fut, "cancel");
        PyObject *r = cancel ? PyObject_CallMethod(w->loop, "call_soon_threadsafe", "O", cancel) : NULL;
        Py_XDECREF(r);
        Py_XDECREF(cancel);
        Py_DECREF(fut);
        PyErr_Clear();
    } else if (still && !w->path->is_async) {
        PyThreadState_SetAsyncExc(ident, w->cancel_exc);
    }
    *ts = PyEval_SaveThread();
}

typedef struct healthcheck_job {
    worker *w;
    char *id;
} healthcheck_job;

/* _runtime.Predictor.run_healthcheck gives (status, error or None). */
static void *healthcheck_thread(void *arg) {
    healthcheck_job *job = arg;
    worker *w = job->w;
    PyGILState_STATE g = PyGILState_Ensure();
    const char *status = "unhealthy", *error = "Healthcheck failed: internal error";
    PyObject *res = PyObject_CallMethod(w->pred, "run_healthcheck", NULL);
    char *err_copy = NULL;
    if (res && PyTuple_Check(res) && PyTuple_Size(res) == 2) {
        PyObject *st = PyTuple_GetItem(res, 0), *er = PyTuple_GetItem(res, 1);
        const char *s = st && PyUnicode_Check(st) ? PyUnicode_AsUTF8AndSize(st, NULL) : NULL;
        status = s && !strcmp(s, "healthy") ? "healthy" : "unhealthy";
        error = NULL;
        if (er && er != Py_None) {
            const char *e = PyUnicode_Check(er) ? PyUnicode_AsUTF8AndSize(er, NULL) : NULL;
            err_copy = e ? strdup(e) : NULL;
            error = err_copy;
        }
    }
    Py_XDECREF(res);
    PyErr_Clear();
    json_t *msg = json_pack("{s:s, s:s, s:s}", "type", "healthcheck_result", "id", job->id, "status", status);
    if (msg && error)
        json_object_set_new(msg, "error", json_string(error));
    worker_send_control(w, msg, 1);
    pthread_mutex_lock(&w->lock);
    w->healthchecks--; /* w may be gone once this is 0 */
    pthread_mutex_unlock(&w->lock);
    PyGILState_Release(g);
    free(err_copy);
    free(job->id);
    free(job);
    return NULL;
}

static void healthcheck_error(worker *w, const char *id, const char *error) {
    worker_send_control(w,
                        json_pack("{s:s, s:s, s:s, s:s}", "type", "healthcheck_result", "id", id, "status",
                                  "unhealthy", "error", error),
                        0);
}

/* The user's healthcheck runs on a thread of its own, so cancels and other control frames
 * keep flowing while it runs (the original blocks its control loop on it). The parent waits
 * for an answer: every failure here still gives one. */
static void start_healthcheck(worker *w, const char *id) {
    if (!id)
        id = "";
    healthcheck_job *job = calloc(1, sizeof *job);
    char *id_copy = strdup(id);
    if (!job || !id_copy) {
        free(job);
        free(id_copy);
        healthcheck_error(w, id, "Healthcheck error: out of memory");
        return;
    }
    job->w = w;
    job->id = id_copy;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&w->lock);
    w->healthchecks++;
    pthread_mutex_unlock(&w->lock);
    if (pthread_create(&t, &attr, healthcheck_thread, job) != 0) {
        pthread_mutex_lock(&w->lock);
        w->healthchecks--;
        pthread_mutex_unlock(&w->lock);
        healthcheck_error(w, id, "Healthcheck error: cannot start the healthcheck thread");
        free(job->id);
        free(job);
    }
    pthread_attr_destroy(&attr);
}

/* 1 when the worker should stop. */
static int handle_control(worker *w, json_t *msg, PyThreadState **ts) {
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!strcmp(type, "cancel")) {
        handle_cancel(w, msg, ts);
    } else if (!strcmp(type, "shutdown")) {
        worker_send_control(w, json_pack("{s:s}", "type", "shutting_down"), 0);
        return 1;
    } else if (!strcmp(type, "healthcheck")) {
        start_healthcheck(w, json_string_value(json_object_get(msg, "id")));
    }
    return 0;
}

/* Handles every frame decoded so far; 1 on shutdown or a broken channel. */
static int handle_decoded(worker *w, PyThreadState **ts) {
    json_t *msg;
    char err[256];
    int rc;
    while ((rc = frame_decoder_next(&w->control_in, &msg, err, sizeof err)) == 1) {
        int stop = handle_control(w, msg, ts);
        json_decref(msg);
        if (stop)
            return 1;
    }
    return rc < 0;
}

void control_loop(worker *w, PyThreadState **ts) {
    char *chunk = malloc(READ_CHUNK);
    while (chunk && !handle_decoded(w, ts)) {
        ssize_t got = read(w->control_fd, chunk, READ_CHUNK);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || frame_decoder_feed(&w->control_in, chunk, (size_t)got) != BUF_OK)
            break; /* parent gone */
    }
    free(chunk);
}
