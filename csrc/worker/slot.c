/* worker/slot.c: the sync slot's reader and the slot states. The thread that serves a sync
 * slot reads its own socket (no hand-off through another thread) and runs the predictions
 * that arrive; the states say which dispatch runs where, for cancels (worker/control.c) and
 * log routing. Async slots are read by the event loop (worker/run_async.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/worker.h"

#define READ_CHUNK 65536

int slot_begin(worker *w, wslot *s, const char *id, unsigned long long seq) {
    char *copy = strdup(id);
    pthread_mutex_lock(&w->lock);
    free(s->current_id);
    s->current_id = copy; /* NULL only out of memory: then logs go to the control channel */
    s->current_seq = seq;
    s->cancelled = seq && s->cancel_seq == seq; /* cancelled before it started: applied, not lost */
    s->running = 1;
    s->thread_ident = PyThread_get_thread_ident();
    int cancelled = s->cancelled;
    pthread_mutex_unlock(&w->lock);
    return cancelled;
}

void slot_end(worker *w, wslot *s) {
    pthread_mutex_lock(&w->lock);
    s->running = 0;
    if (s->current_seq > s->finished_seq)
        s->finished_seq = s->current_seq;
    free(s->current_id);
    s->current_id = NULL;
    s->cancelled = 0;
    pthread_mutex_unlock(&w->lock);
}

int slot_is_cancelled(worker *w, wslot *s) {
    pthread_mutex_lock(&w->lock);
    int c = s->cancelled;
    pthread_mutex_unlock(&w->lock);
    return c;
}

int slot_set_future(worker *w, wslot *s, PyObject *future) {
    pthread_mutex_lock(&w->lock);
    s->future = future;
    int cancelled = s->cancelled;
    pthread_mutex_unlock(&w->lock);
    return cancelled;
}

/* Runs the predict frames decoded so far; -1 (the slot poisoned) on a broken frame. */
static int run_decoded(worker *w, wslot *s, PyThreadState **ts) {
    json_t *job;
    char err[256];
    int rc;
    while ((rc = frame_decoder_next(&s->dec, &job, err, sizeof err)) == 1) {
        if (!strcmp(json_string_value(json_object_get(job, "type")), "predict")) {
            PyEval_RestoreThread(*ts);
            run_prediction(w, s, job);
            *ts = PyEval_SaveThread();
        }
        json_decref(job);
    }
    if (rc == 0)
        return 0;
    char text[300];
    snprintf(text, sizeof text, "Slot socket error: %s", err);
    worker_poison_slot(w, s, text, 0);
    return -1;
}

void slot_serve(wslot *s, PyThreadState **ts) {
    worker *w = s->w;
    char *chunk = malloc(READ_CHUNK);
    while (chunk && !w->quit) {
        ssize_t got = read(s->fd, chunk, READ_CHUNK);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || frame_decoder_feed(&s->dec, chunk, (size_t)got) != BUF_OK)
            break;
        if (run_decoded(w, s, ts) < 0)
            break;
    }
    free(chunk);
}

void *slot_thread_main(void *arg) {
    wslot *s = arg;
    PyGILState_STATE g = PyGILState_Ensure();
    PyThreadState *ts = PyEval_SaveThread();
    slot_serve(s, &ts);
    PyEval_RestoreThread(ts);
    PyGILState_Release(g);
    return NULL;
}
